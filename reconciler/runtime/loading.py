"""Loading base models, tokenizers and trained adapters from the locations a job file names.

`file://` paths are read directly; `hf://` goes through the Hugging Face cache at the pinned
revision (offline when HF_HUB_OFFLINE is set); `s3://` is copied to a local cache first.
Every failure a user can cause (a missing folder, a folder without weights) is a
`ModelLoadError` whose message says which model and what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import TuneopsError
from reconciler.jobs.jobfile import BaseModelRef, ModelVersionRef, Tokens
from reconciler.specs.confinement import OutsideRoots, resolve_for_job

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class ModelLoadError(TuneopsError, RuntimeError):
    """A model that cannot be loaded for a reason the user can fix."""


def model_directory(ref: BaseModelRef) -> str:
    """A local folder (file://, s3:// after download) or a Hub id for `from_pretrained`. A
    file:// folder is a spec's, so it and every file in it must stay inside the folders the
    job may read (specs/confinement.py)."""
    scheme, _, location = ref.source.partition("://")
    if scheme == "file":
        written = Path(location)
        return _checked_folder(ref, written, _confined(ref, written, "model folder"))
    if scheme == "hf":
        return location
    if scheme == "s3":
        return _download_s3(ref)
    raise ModelLoadError(f"base model '{ref.name}': unsupported source {ref.source}")


def _confined(ref: BaseModelRef, path: Path, what: str) -> Path:
    try:
        return resolve_for_job(path)
    except OutsideRoots as error:
        raise ModelLoadError(f"base model '{ref.name}': {what} {error}") from None


def _checked_folder(ref: BaseModelRef, written: Path, path: Path) -> str:
    """`path` (`written` in messages) when it is a model folder with a config and weights, or
    ModelLoadError saying what is missing."""
    if not path.is_dir():
        raise ModelLoadError(f"base model '{ref.name}': {written} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"base model '{ref.name}': {written} has no config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"base model '{ref.name}': {written} has no weights "
                             f"(expected one of {', '.join(WEIGHT_FILES)})")
    return str(path)


def _download_s3(ref: BaseModelRef) -> str:
    try:
        import fsspec
        import s3fs  # noqa: F401 - fsspec's s3 implementation
    except ImportError:
        raise ModelLoadError(f"base model '{ref.name}': reading {ref.source} needs s3fs "
                             "(pip install s3fs)") from None
    import os
    import tempfile

    cache = Path(os.environ.get("TUNEOPS_MODEL_CACHE", Path(tempfile.gettempdir()) / "tuneops-models"))
    target = cache / ref.source.removeprefix("s3://").replace("/", "__")
    if not (target / "config.json").is_file():
        fsspec.filesystem("s3").get(ref.source.rstrip("/") + "/", str(target), recursive=True)
    return str(target)


def _revision(ref: BaseModelRef) -> dict[str, Any]:
    return {"revision": ref.revision} if ref.revision and ref.source.startswith("hf://") else {}


def load_tokenizer(ref: BaseModelRef) -> PreTrainedTokenizerBase:
    """The base model's tokenizer with the spec's chat template applied and a pad token set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_directory(ref), trust_remote_code=ref.trust_remote_code,
                                              **_revision(ref))
    template = chat_template_text(ref, tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    apply_tokens(tokenizer, ref.tokens)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def apply_tokens(tokenizer: Any, tokens: Tokens | None) -> None:
    """The BaseModel's `tokens`: pad, eos and bos set (added to the vocabulary when new), and the
    `add` tokens added as ordinary tokens (kept whole, and shown when decoded)."""
    if tokens is None:
        return
    special = {f"{role}_token": value for role in ("pad", "eos", "bos")
               if (value := getattr(tokens, role)) is not None}
    if special:
        tokenizer.add_special_tokens(special)
    if tokens.add:
        tokenizer.add_tokens(list(tokens.add))


def fit_to_tokens(model: Any, ref: BaseModelRef) -> None:
    """Grow the embeddings (and output head) to the vocabulary after the BaseModel's `tokens`, and
    point the model's pad/eos/bos ids at the tokens set. Every load of the base for a model built
    on it does this, before an adapter is applied: its saved embeddings have the grown size. The
    new rows start near the mean of the others (transformers' mean resizing), drawn from a fixed
    seed so that each load starts them alike. A model whose embedding matrix already has spare
    rows (Qwen's are padded) is not resized."""
    if ref.tokens is None:
        return
    import torch

    tokenizer = load_tokenizer(ref)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            torch.manual_seed(0)
            model.resize_token_embeddings(len(tokenizer))
    generation = getattr(model, "generation_config", None)
    for role in ("pad", "eos", "bos"):
        if getattr(ref.tokens, role) is None:
            continue
        token_id = getattr(tokenizer, f"{role}_token_id")
        setattr(model.config, f"{role}_token_id", token_id)
        if generation is not None:
            setattr(generation, f"{role}_token_id", token_id)


def chat_template_text(ref: BaseModelRef, tokenizer: Any) -> str | None:
    """The Jinja text to set on the tokenizer, or None to keep its own."""
    from reconciler.runtime.chat_templates import CHATML, TEMPLATES

    if ref.chat_template == "tokenizer":
        if not tokenizer.chat_template:
            return CHATML  # a base model without one: ChatML is the common default
        return None
    if ref.chat_template in TEMPLATES:
        return TEMPLATES[ref.chat_template]
    path = _confined(ref, Path(ref.chat_template.removeprefix("file://")), "chat template")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelLoadError(f"base model '{ref.name}': cannot read chat template {path} "
                             f"({error.strerror})") from None


def attention_implementation(choice: str, cuda: bool) -> str:
    """training.attention -> transformers' `attn_implementation`: `auto` is flash_attention_2 where
    it can run (a CUDA GPU and the flash_attn package), else sdpa; the others pass through."""
    if choice != "auto":
        return choice
    import importlib.util

    return "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") is not None else "sdpa"


def load_base_model(ref: BaseModelRef, *, dtype: Any = None, quantization: Any = None,
                    device_map: Any = None, directory: str | None = None,
                    attention: str | None = None, scoring_head: bool = False) -> PreTrainedModel:
    """`directory` is given for a model this project trained (its storage, not a spec's path);
    `attention` is an `attn_implementation` (see attention_implementation), else transformers'.
    `scoring_head` loads it with a one-score head instead of the language-model head (a reward
    model, `method: reward`). The BaseModel's `tokens` are applied (fit_to_tokens)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"trust_remote_code": ref.trust_remote_code, **_revision(ref)}
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device_map is not None:
        kwargs["device_map"] = device_map
    directory = directory or model_directory(ref)
    auto: Any = AutoModelForCausalLM
    if scoring_head:
        auto, kwargs["num_labels"] = AutoModelForSequenceClassification, 1
    try:
        model = auto.from_pretrained(directory, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"base model '{ref.name}' ({ref.source}): {_first_line(error)}") from None
    fit_to_tokens(model, ref)
    return model


def load_model(ref: ModelVersionRef | BaseModelRef, *, dtype: Any = None,
               attention: str | None = None, scoring_head: bool = False) -> PreTrainedModel | PeftModel:
    """A base model alone, or a trained model: base plus adapter, or full weights (with a
    scoring head for a reward model)."""
    if isinstance(ref, BaseModelRef):
        return load_base_model(ref, dtype=dtype, attention=attention, scoring_head=scoring_head)
    location = Path(ref.location)
    if not location.is_dir():
        raise ModelLoadError(f"model of fine-tune '{ref.fine_tune}': {location} is not a directory")
    if not ref.adapter:
        full = BaseModelRef(name=ref.fine_tune, source=f"file://{location}",
                            trust_remote_code=ref.base_model.trust_remote_code)
        return load_base_model(full, dtype=dtype, directory=_checked_folder(full, location, location),
                               attention=attention, scoring_head=scoring_head)
    if not (location / "adapter_config.json").is_file():
        raise ModelLoadError(f"model of fine-tune '{ref.fine_tune}': {location} has no adapter_config.json")
    from peft import PeftModel

    base = load_adapter_base(ref, dtype=dtype, attention=attention, scoring_head=scoring_head)
    return PeftModel.from_pretrained(base, str(location))


def load_adapter_base(ref: ModelVersionRef, *, dtype: Any = None, attention: str | None = None,
                      scoring_head: bool = False, quantization: Any = None) -> PreTrainedModel:
    """The weights a fine-tune's adapter is loaded on: its base model, or the full weights of the
    fine-tune it was trained on (`weights`, a fromFineTune chain through a full fine-tune)."""
    if ref.weights is None:
        return load_base_model(ref.base_model, dtype=dtype, attention=attention, scoring_head=scoring_head,
                               quantization=quantization)
    folder = Path(ref.weights)
    if not folder.is_dir():
        raise ModelLoadError(f"model of fine-tune '{ref.fine_tune}': the weights it was trained on, "
                             f"{folder}, are not a directory")
    full = BaseModelRef(name=ref.fine_tune, source=f"file://{folder}",
                        trust_remote_code=ref.base_model.trust_remote_code, tokens=ref.base_model.tokens)
    return load_base_model(full, dtype=dtype, directory=_checked_folder(full, folder, folder),
                           attention=attention, scoring_head=scoring_head, quantization=quantization)


def load_reward_model(ref: ModelVersionRef) -> PreTrainedModel | PeftModel:
    """A FineTune's reward model (`method: reward`), for scoring: its weights with the score head
    it was trained with; an adapter is merged in, since it is only read."""
    model = load_model(ref, scoring_head=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def load_model_tokenizer(ref: ModelVersionRef | BaseModelRef) -> PreTrainedTokenizerBase:
    """A trained model's own tokenizer (saved with it, chat template included) when it has one."""
    if isinstance(ref, ModelVersionRef) and (Path(ref.location) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ref.location)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return load_tokenizer(ref.base_model if isinstance(ref, ModelVersionRef) else ref)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
