#!/usr/bin/env bash
# Multi-process testing under torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py flags]
# On a machine without CUDA, the config must select the gloo backend (env_cfg.dist_cfg.backend='gloo').
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT.
set -e
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
