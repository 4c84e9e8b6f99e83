#!/bin/bash
# Sharded ingest on Slurm: a job array whose task I indexes share I of N of the archive into
# a folder of its own (`simcase index --shard auto/N` reads SLURM_ARRAY_TASK_ID), then a merge
# job that runs once every task has succeeded (--dependency=afterok).
#
# Submit both from a login node (settings from the environment, defaults below):
#   MANIFEST=/archive/labels.csv OUT=/scratch/simcase SHARDS=8 bash index-array.sh
# or index folders instead of a manifest: INPUTS="/archive/dicom" ... bash index-array.sh
#
# Every task gets the same SIMCASE_PATIENT_SALT (sbatch passes the environment on), or the
# shares' patient keys would not join: set it yourself, or the first submission makes one in
# $OUT/patient-salt (mode 600) and later ones reuse it. A failed or cancelled task is
# resubmitted with `sbatch --array=I index-array.sh` (with the same environment): it resumes,
# adding only what its folder lacks; then run the merge command again (it adds only what the
# target lacks).
#SBATCH --job-name=simcase-index
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=24:00:00
#SBATCH --output=simcase-index-%A_%a.log
set -euo pipefail

SHARDS=${SHARDS:-8}
OUT=${OUT:?set OUT to the folder for the shard indexes and the merged index}
SIMCASE=${SIMCASE:-simcase}

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    # Submission: the array (its size from SHARDS, overriding the #SBATCH line), then the merge.
    [ -n "${MANIFEST:-}${INPUTS:-}" ] || { echo "set MANIFEST or INPUTS" >&2; exit 1; }
    mkdir -p "$OUT/shards"
    if [ -z "${SIMCASE_PATIENT_SALT:-}" ]; then
        if [ ! -s "$OUT/patient-salt" ]; then
            (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$OUT/patient-salt")
        fi
        SIMCASE_PATIENT_SALT=$(cat "$OUT/patient-salt")
    fi
    export SIMCASE_PATIENT_SALT SHARDS OUT SIMCASE MANIFEST INPUTS
    array=$(sbatch --parsable --array="0-$((SHARDS - 1))" "$(readlink -f "$0")")
    shards=""
    for ((i = 0; i < SHARDS; i++)); do shards="$shards $OUT/shards/shard-$i"; done
    merge=$(sbatch --parsable --dependency="afterok:${array%%;*}" --job-name=simcase-merge \
        --cpus-per-task=1 --mem=4G --time=4:00:00 --output=simcase-merge-%j.log \
        --wrap="$SIMCASE merge$shards --into $OUT/archive")
    echo "submitted array ${array%%;*} ($SHARDS shards) and merge $merge (after it succeeds)"
    exit 0
fi

# One task: share SLURM_ARRAY_TASK_ID of SHARDS.
args=(index --quiet --index "$OUT/shards/shard-$SLURM_ARRAY_TASK_ID" --shard "auto/$SHARDS")
if [ -n "${MANIFEST:-}" ]; then args+=(--manifest "$MANIFEST"); fi
# shellcheck disable=SC2206 # INPUTS is a space-separated list of folders
if [ -n "${INPUTS:-}" ]; then args+=($INPUTS); fi
exec "$SIMCASE" "${args[@]}"
