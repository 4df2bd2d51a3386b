"""The names of what a finetune trial writes into its out_dir.

Kept free of torch, so that readers of finished runs (``orchestrator.rundir``) name the same files as the writer
(``algorithms.finetune.run_trial``) without importing the trainer.
"""
CONFIG_JSON = "config.json"  # the trial's FinetuneConfig, as a dict
METRICS_JSONL = "metrics.jsonl"  # one JSON object per finished iteration (iteration 0: the start's evaluation)
TB_DIR = "tb"  # TensorBoard event files, one per session of a resumed trial
CHECKPOINT_DIR = "checkpoint"  # the latest finished iteration's state
TRIAL_STATE = "trial_state.pt"  # inside CHECKPOINT_DIR: what --resume continues from
TRIAL_FILES = (CONFIG_JSON, METRICS_JSONL, TB_DIR, CHECKPOINT_DIR)  # everything run_trial writes (what --overwrite removes)
