"""Reference card-fraud training: one `train.py` for torchrun, data-parallel (DDP) or sharded (FSDP2).

The same entry point runs on a laptop (`finml train local`, gloo on CPU) and on the cluster (an Indexed Job rendered
by `finml train render`, NCCL on GPUs). It reads exactly the feature store's training-set files
(`training_set.parquet` + `training_set.lineage.json`) and records the run in MLflow with its lineage.
"""
