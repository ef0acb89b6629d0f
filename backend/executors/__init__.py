"""Where evaluation runs execute: child processes on this machine, or Slurm jobs on a cluster."""
