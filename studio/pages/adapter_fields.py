"""What an adapter's ``studio.json`` fields are called on the Adapters page, and what each means.

The one table of names: the details pane shows a field by its name here, with the meaning as its
tooltip, never by its key in the file. A field the table does not know (written by a newer
studio, or by hand) gets its key in plain words.
"""

from __future__ import annotations

# key in studio.json -> (name shown, what it means to the user)
FIELDS: dict[str, tuple[str, str]] = {
    # what it was made from
    "base_model": ("Base model", "The model this adapter was trained on: it works on top of that model only."),
    "base_model_path": ("Base model folder", "Where the base model's files were when the adapter was made."),
    "base_model_fingerprint": (
        "Base model fingerprint",
        "A checksum of the base model's files when the adapter was made. The studio compares it with the model "
        "you load the adapter on, and warns when that is not the same model."),
    "dataset": ("Dataset", "The file the adapter was trained on."),
    "dataset_sha256": (
        "Dataset checksum (SHA-256)",
        "A fingerprint of the dataset file's contents at training time: if the file has changed since, its "
        "checksum differs, so you can tell whether training again would see the same data."),
    "combined_from": ("Combined from", "The adapters, with their weights, this one was combined from."),
    "combination": ("Combination method", "How the adapters were combined: linear, concatenate, SVD, TIES or DARE."),
    "density": ("Density", "The fraction of each adapter's weights that TIES or DARE kept."),
    "imported_from": ("Imported from", "The folder or zip this adapter was imported from."),
    "duplicated_from": ("Copied from", "The library adapter this one is a copy of."),
    # settings
    "method": ("Method", "How it was trained: LoRA, QLoRA, DoRA, prompt tuning, prefix tuning or P-tuning."),
    "objective": ("Objective", "What it learned from: supervised replies (SFT), or preferences between answers "
                               "(DPO, ORPO, KTO or SimPO: which of two answers is better)."),
    "beta": ("Beta", "How far preference training could move the model from where it started: lower let it change "
                     "more (0.1 is usual)."),
    "rank": ("Rank", "The size of the LoRA matrices: a higher rank can learn more, and takes more memory."),
    "alpha": ("Alpha", "LoRA's scale: the adapter's change to the model is multiplied by alpha / rank."),
    "dropout": ("Dropout", "The fraction of the adapter's inputs left out at random in training, against "
                           "learning the examples by heart."),
    "use_rslora": ("Rank-stabilised scale (rsLoRA)", "Scaled by alpha / √rank instead of alpha / rank."),
    "targets": ("Trained layers", "The layers of the base model the adapter was attached to."),
    "learning_rate": ("Learning rate", "How large each training step's change to the adapter was."),
    "batch_size": ("Batch size", "Examples in each step on each device."),
    "grad_accum": ("Gradient accumulation", "Batches added up before each step: each step learned from "
                                            "batch size × this many examples."),
    "max_length": ("Max length (tokens)", "Longer examples were cut to this many tokens."),
    "max_steps": ("Planned steps", "The steps the run was set to train (0: as many as its epochs take)."),
    "epochs": ("Epochs", "How many times the run was set to go through the dataset."),
    "seed": ("Random seed", "The same seed with the same settings and data trains the same adapter."),
    "optimizer": ("Optimizer", "The algorithm that turned each step's gradients into changes."),
    "lr_scheduler": ("Learning-rate schedule", "How the learning rate changed over the run."),
    "warmup_steps": ("Warm-up steps", "The first steps, over which the learning rate rose from zero."),
    "weight_decay": ("Weight decay", "How strongly each step pulled the adapter's weights towards zero."),
    "max_grad_norm": ("Gradient clipping", "The largest gradient a step could use; larger ones were scaled down."),
    "grad_checkpointing": ("Gradient checkpointing", "Recomputed intermediate results instead of keeping them: "
                                                     "less memory, slower steps."),
    "batching": ("Batching", "How examples were put together into batches."),
    "train_on": ("Trained on", "Which parts of each conversation the training counted (the replies, or all)."),
    "val_fraction": ("Held out for evaluation", "The fraction of rows kept aside to measure the evaluation loss."),
    "quant": ("Base model quantisation", "How the frozen base model was stored in memory for QLoRA."),
    "double_quant": ("Double quantisation", "The quantisation's own scales quantised too, for a little less memory."),
    "compute_dtype": ("Compute precision", "The number format QLoRA computed in."),
    "num_virtual_tokens": ("Virtual tokens", "How many trained tokens the adapter puts before each prompt."),
    "prompt_init": ("Virtual tokens started from", "Random values, or the tokens of a text."),
    "prompt_init_text": ("Starting text", "The text the virtual tokens started from."),
    "prefix_projection": ("Prefix projection", "Whether the prefix was made by a small trained network."),
    "precision": ("Training precision", "The number format training computed in (bf16, fp16 or fp32)."),
    # the result
    "steps": ("Steps trained", "The training steps the adapter had when it was saved."),
    "final_loss": ("Final training loss", "How far the adapter's answers were from the training data at the last "
                                          "step: lower fits the data more closely."),
    "final_eval_loss": ("Final evaluation loss", "The same measure on rows held out from training: lower is "
                                                 "better; rising while the training loss falls means the adapter "
                                                 "learns the examples by heart."),
    "best_step": ("Best step", "With early stopping: the step with the lowest evaluation loss, whose adapter "
                               "was kept."),
    "best_eval_loss": ("Best evaluation loss", "The lowest evaluation loss of the run, at the best step."),
    "duration_s": ("Training time (seconds)", "How long training took, loading not counted."),
    "created": ("Created", "When the adapter was saved (UTC)."),
    "hardware": ("Trained on device", "The device that trained it."),
    "run_dir": ("Run folder", "The training run's folder: its log, settings and checkpoints."),
    # the files (not in studio.json: the details pane adds them)
    "folder": ("Folder", "Where the adapter's files are."),
    "size": ("Size", "The adapter's files on disk."),
}


def field_name(key: str) -> str:
    """The name a field is shown by: the table's, else its key in plain words."""
    known = FIELDS.get(key)
    return known[0] if known else key.replace("_", " ").strip().capitalize() or key


def field_meaning(key: str) -> str:
    """What a field means, for its tooltip."""
    known = FIELDS.get(key)
    return known[1] if known else "Recorded with the adapter when it was made (in its studio.json)."
