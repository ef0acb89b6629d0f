"""PandaLM, a local judge model: a causal LM from the Hub, pinned at a commit, run with transformers.

The prompt is PandaLM's (tasks/judges/pandalm.txt, the no-Input variant of its build_pandalm_prompt; the
AlpacaEval instructions have no separate input), with both responses cleaned as it cleans them (stripped,
special-token spellings such as </s> removed). The model answers "1", "2" or "Tie" on its first line, then
"### Reason:" and "### Reference:". Its verdict is read from that first line alone; anything else is no
verdict (PandaLM's own parser counts it as a tie, which would hide a judge that does not answer).

PandaLM is position-biased, so every pair is judged in both orders and verdicts.combine puts them together.
Decoding is greedy with PandaLM's repetition penalty 1.2 (PandaLM used beam search; greedy is as
deterministic and cheaper), so the same prompt always gives the same verdict. Batches are left-padded and
generated together. The model is loaded with trust_remote_code=False and from safetensors only: nothing in
its repository is executed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backend.errors import JudgeNotLoadable
from backend.judged.judges import PROMPTS_DIR, PromptTemplate
from backend.judged.verdicts import FIRST, SECOND, TIE, Order, Pair, Shown, Verdict

ANNOTATOR = "pandalm"
DEFAULT_REPO = "WeOpenML/PandaLM-7B-v1"
PROMPT_FILE = PROMPTS_DIR / "pandalm.txt"
PLACEHOLDERS = ("instruction", "response_1", "response_2")
DEFAULT_MAX_NEW_TOKENS = 512  # PandaLM's: room for its reason and reference answer after the verdict
REPETITION_PENALTY = 1.2  # PandaLM's inference setting
#: The special-token spellings PandaLM removes from responses and from its answer.
SPECIAL_TOKENS = re.compile(
    r"<unk>|<pad>|<s>|</s>|\[PAD\]|<\|endoftext\|>|\[UNK\]|\[CLS\]|\[MASK\]|<\|startofpiece\|>"
    r"|<\|endofpiece\|>|\[gMASK\]|\[sMASK\]"
)
_COMMIT = re.compile(r"[0-9a-f]{40}")


def clean(text: str) -> str:
    """A response or an answer as PandaLM cleans it: stripped, without special-token spellings."""
    return SPECIAL_TOKENS.sub("", text.strip()).strip()


def parse_verdict(answer: str) -> float | None:
    """The shown-order preference on the answer's first line: "1", "2" or "Tie" (any case); else None."""
    first_line = answer.strip().split("\n")[0]
    if first_line == "1":
        return FIRST
    if first_line == "2":
        return SECOND
    if first_line.lower() == "tie":
        return TIE
    return None


class PandaLMJudge:
    """PandaLM (or a judge model trained on its format) loaded from ``folder``, the snapshot of
    ``repo_id`` at commit ``revision``; ``repo_id@revision`` is its identity in the cache."""

    annotator = ANNOTATOR

    def __init__(
        self,
        folder: Path,
        *,
        revision: str,
        repo_id: str = DEFAULT_REPO,
        prompt_file: Path = PROMPT_FILE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        repetition_penalty: float = REPETITION_PENALTY,
        batch_size: int = 4,
        device: str = "cpu",
        dtype: str = "auto",
    ) -> None:
        if not _COMMIT.fullmatch(revision):
            raise JudgeNotLoadable(
                f"the judge {repo_id} must be pinned at a full commit sha (40 hex digits), not {revision!r}: "
                "look it up on the model's Hub page (Files and versions, History)"
            )
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size are at least 1")
        self.repo_id = repo_id
        self.revision = revision
        self.prompt = PromptTemplate.load(prompt_file, PLACEHOLDERS)
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.batch_size = batch_size
        self.device = device
        self._lock = threading.Lock()  # one generation at a time: the model is one
        self._tokenizer, self._model = _load(Path(folder), f"{repo_id}@{revision}", device, dtype)

    @classmethod
    def from_hub_cache(cls, repo_id: str, revision: str, **options: Any) -> PandaLMJudge:
        """The judge from the Hugging Face cache (HF_HOME), which must already hold ``repo_id`` at
        ``revision``: nothing is downloaded."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError) as exc:
            raise JudgeNotLoadable(
                f"the judge {repo_id} at {revision} is not in the Hugging Face cache: download it first "
                f"(`hf download {repo_id} --revision {revision}`) on a machine with access"
            ) from exc
        return cls(Path(folder), revision=revision, repo_id=repo_id, **options)

    @property
    def identity(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    @property
    def prompt_hash(self) -> str:
        return self.prompt.sha256

    @property
    def decoding(self) -> Mapping[str, Any]:
        return {
            "do_sample": False,
            "num_beams": 1,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }

    def orders(self, pair: Pair) -> tuple[Order, ...]:
        return (Order.REFERENCE_FIRST, Order.MODEL_FIRST)

    def prompt_text(self, shown: Shown) -> str:
        return self.prompt.fill(
            {
                "instruction": shown.instruction,
                "response_1": clean(shown.first),
                "response_2": clean(shown.second),
            }
        )

    def judge_batch(self, shown: Sequence[Shown]) -> list[Verdict]:
        """The verdicts of ``shown``, generated together (greedy, left-padded)."""
        if not shown:
            return []
        import torch
        from transformers import GenerationConfig

        tokenizer, model = self._tokenizer, self._model
        with self._lock, torch.inference_mode():
            started = time.monotonic()
            inputs = tokenizer([self.prompt_text(s) for s in shown], return_tensors="pt", padding=True)
            inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
            config = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
            )
            output = model.generate(**inputs, generation_config=config)
            width = inputs["input_ids"].shape[1]
            answers = [clean(tokenizer.decode(row[width:], skip_special_tokens=True)) for row in output]
            seconds = (time.monotonic() - started) / len(shown)
        return [Verdict(parse_verdict(a), a, None, seconds) for a in answers]


def _load(folder: Path, name: str, device: str, dtype: str) -> tuple[Any, Any]:
    """The tokenizer (left padding, a pad token) and the model in eval mode, on ``device``."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JudgeNotLoadable(f"the judge {name} has no readable config.json in {folder}") from exc
    if not isinstance(config, dict) or "auto_map" in config:
        raise JudgeNotLoadable(
            f"the judge {name} needs custom code (its config.json has auto_map); judges are loaded with "
            "trust_remote_code=False: use a model transformers implements"
        )
    if not any(folder.glob("*.safetensors")):
        raise JudgeNotLoadable(
            f"the judge {name} has no safetensors weights in {folder}: convert its weights to safetensors "
            "(pickled .bin weights are never loaded) and pin that commit"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(folder),
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        )
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError... for what it cannot load
        raise JudgeNotLoadable(f"the judge {name} cannot be loaded from {folder} ({exc})") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:  # PandaLM pads with id 0 (<unk> in Llama's vocabulary)
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    model.to(device)
    model.eval()
    return tokenizer, model
