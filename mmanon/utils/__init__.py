from .setup_env import setup_cpu_distributed

__all__ = ['setup_cpu_distributed']
