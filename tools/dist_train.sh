#!/usr/bin/env bash
# Multi-process training under torchrun: bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py flags]
# On a machine without CUDA, the config must select the gloo backend (env_cfg.dist_cfg.backend='gloo').
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT.
set -e
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
