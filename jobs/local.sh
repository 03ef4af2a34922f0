#!/bin/bash
# Two ranks on one machine with mpirun (Open MPI from 'pip install hpcvsr[mpi]' or the system's).
#   bash jobs/local.sh [--set key=value ...]
# Stop it with 'kill -USR1 <mpirun pid>' (forwarded to the ranks: checkpoint and exit 0); rerun to resume.
set -euo pipefail
CONFIG=${CONFIG:-configs/quickstart.yaml}
RUN_DIR=${RUN_DIR:-runs/local-2ranks}
NP=${NP:-2}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
exec mpirun -n "$NP" --oversubscribe python -m hpcvsr.train --config "$CONFIG" --run-dir "$RUN_DIR" "$@"
