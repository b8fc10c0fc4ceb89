#!/bin/bash
# eip-al labeling job array. Task i runs the job script on line i+1 of the task list;
# each job script runs CP2K in its own directory and writes run.status there.
#SBATCH --job-name={{job_name}}
#SBATCH --array={{array}}
#SBATCH --time={{time}}
#SBATCH --ntasks={{ntasks}}
#SBATCH --cpus-per-task={{cpus_per_task}}
#SBATCH --output={{output}}
{{extra_options}}
set -u
task_list={{task_list}}
script=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$task_list")
if [ -z "$script" ]; then
  echo "eip-al: no line $((SLURM_ARRAY_TASK_ID + 1)) in $task_list" >&2
  exit 3
fi
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
exec bash "$script"
