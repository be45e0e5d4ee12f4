"""What runs inside a job: `tuneops run dataset|finetune|evaluate|serve --job JOB.json`.

The only package that imports torch, transformers, peft, trl, deepspeed and mlflow, and only
inside functions, so that importing it costs nothing.
"""
