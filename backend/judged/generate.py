"""The judged leaderboard's generation step: the evaluated model answers every instruction of an instruction
set through its chat template, with pinned greedy decoding, for AlpacaEval's model_outputs.json.

The model loads as the harness run loads it: the request's model arguments (``runner.model_arguments``:
dtype per precision, an adapter through peft on its base model, never trust_remote_code), by repo id and
commit from the Hub cache the runner's environment names (the local model store when the run has one), and
in float32 on a CPU, as the harness child computes there. The prompt is the instruction as the one user turn
through the tokenizer's chat template, the assistant's turn opened; a tokenizer without a template is refused.

- ``hf``: prompts in batches, left-padded, decoded greedily by transformers' generate under a generation
  config of ours only (the repository's sampling defaults, repetition penalty and the like, never apply). A
  row's tokens do not depend on its batch, so outputs equal one-at-a-time outputs (tested). A row ends at an
  end-of-turn token, at a stop sequence (cut from the text) or after max_new_tokens.
- ``vllm``: vllm.LLM with SamplingParams(temperature=0, max_tokens, stop, seed) over the same prompt tokens.

Each finished batch is appended to the progress file (``outputs.ProgressFile``), so a killed generation
resumes without generating again what it had finished.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.domain import Precision, preview
from backend.errors import InvalidInput, NoChatTemplate, UnsupportedRun
from backend.evaluation.runner import RunSpec, model_arguments
from backend.judged.annotations import MAX_TEXT_CHARS
from backend.judged.outputs import (
    GeneratedOutput,
    Instruction,
    ProgressFile,
    check_generator,
    check_instructions,
)
from backend.serving.generation import stop_at
from backend.serving.models import LoadedModel, chat_prompt_ids, quiet_transformers

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
#: Bounds of the decoding settings: AlpacaEval's generators use a few thousand new tokens.
MAX_NEW_TOKENS = 32_768
MAX_BATCH_SIZE = 1024
MAX_STOPS = 16
MAX_STOP_CHARS = 256


@dataclass(frozen=True)
class GenerationSettings:
    """Pinned decoding: the same model, instructions and settings always give the same outputs."""

    max_new_tokens: int = 2048
    stop: tuple[str, ...] = ()
    seed: int = 0
    temperature: float = 0.0  # 0 is greedy, the only decoding supported
    batch_size: int = (
        8  # prompts decoded together (hf) or per durable step (vllm); outputs do not depend on it
    )

    def __post_init__(self) -> None:
        for name, value, high in (
            ("max_new_tokens", self.max_new_tokens, MAX_NEW_TOKENS),
            ("batch_size", self.batch_size, MAX_BATCH_SIZE),
        ):
            if type(value) is not int or not 1 <= value <= high:
                raise InvalidInput(f"{name} is {preview(value)}: give a whole number from 1 to {high}")
        if type(self.seed) is not int or not 0 <= self.seed < 2**63:
            raise InvalidInput(f"seed is {preview(self.seed)}: give a whole number from 0 to 2**63 - 1")
        if (
            not isinstance(self.stop, tuple)
            or len(self.stop) > MAX_STOPS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in self.stop)
        ):
            raise InvalidInput(
                f"stop is {preview(self.stop)}: give a tuple of at most {MAX_STOPS} stop sequences, each 1 to "
                f"{MAX_STOP_CHARS} characters"
            )
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise InvalidInput(f"temperature is {preview(self.temperature)}: give 0 (greedy decoding)")
        if self.temperature != 0:
            raise UnsupportedRun(
                f"temperature {self.temperature:g}: the judged generation decodes greedily only (temperature "
                "0), so that outputs are reproducible; set temperature to 0"
            )

    def decoding(self) -> dict[str, Any]:
        """The settings that decide the outputs (batch_size does not), as a generation records them."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class Decoded:
    text: str
    tokens: int
    finish_reason: str


def load_arguments(spec: RunSpec) -> dict[str, Any]:
    """The evaluated model's loading arguments, as the harness child resolves them (and records them):
    the request's model arguments, the device picked, float32 for half precisions on a CPU. An adapter is
    loaded at the request's commit (``peft_revision``), its base model at its main branch."""
    if spec.backend not in BACKENDS:
        raise UnsupportedRun(f"the backend {preview(spec.backend)} is not one of {', '.join(BACKENDS)}")
    args = model_arguments(spec, None)
    if spec.backend == "hf":
        if "delta" in args:
            raise UnsupportedRun(
                f"{spec.model} holds delta weights, which the judged generation does not add to a base model: "
                "submit the merged weights as Original"
            )
        if "peft" in args:
            args["peft_revision"] = spec.sha
        if spec.device == "auto":
            import torch

            args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        if args.get("device") == "cpu" and args.get("dtype") in ("float16", "bfloat16"):
            args["dtype"] = "float32"  # half precision is emulated on CPUs: as the harness child does
    return args


def generation_header(args: dict[str, Any], settings: GenerationSettings, generator: str) -> dict[str, Any]:
    """What names one generation: a progress file of another one is not resumed."""
    return {"generator": generator, "model_arguments": args, "decoding": settings.decoding()}


def generate_outputs(
    spec: RunSpec,
    instructions: Sequence[Instruction],
    settings: GenerationSettings,
    generator: str,
    progress_path: Path | None = None,
) -> list[GeneratedOutput]:
    """The model's output for every instruction, in their order, with ``generator`` as its name.

    The backend (hf or vllm) and the device are the run's (``spec.backend``, ``spec.device``). With
    ``progress_path``, the outputs already there are kept and each new one is added as it is finished."""
    check_generator(generator)
    check_instructions(instructions)
    if spec.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UnsupportedRun(
            "the vllm backend needs vllm, which is not installed on this machine: pip install '.[vllm]' (a "
            "CUDA machine), or run the generation with the hf backend (LEADERBOARD_EVAL_BACKEND=hf)"
        )
    args = load_arguments(spec)
    header = generation_header(args, settings, generator)
    progress = ProgressFile.open(progress_path, header, instructions) if progress_path else None
    done = dict(progress.done) if progress else {}
    try:
        todo = [i for i in range(len(instructions)) if i not in done]
        if todo:
            log.info("generating", extra={"model": spec.model, "outputs": len(todo), "finished": len(done)})
            for index, output in _generate(spec, args, instructions, todo, settings, generator, progress):
                done[index] = output
    finally:
        if progress:
            progress.close()
    return [done[i] for i in range(len(instructions))]


def _generate(
    spec: RunSpec,
    args: dict[str, Any],
    instructions: Sequence[Instruction],
    todo: list[int],
    settings: GenerationSettings,
    generator: str,
    progress: ProgressFile | None,
) -> list[tuple[int, GeneratedOutput]]:
    tokenizer = _load_tokenizer(spec, args)
    prompts = {
        i: chat_prompt_ids(
            tokenizer, [{"role": "user", "content": instructions[i].instruction}], spec.model, spec.sha
        )
        for i in todo
    }
    decode: Callable[[list[list[int]]], list[Decoded]]
    if spec.backend == "vllm":
        decode = _vllm_decoder(spec, args, settings)
    else:
        loaded = _load_hf(spec, args, tokenizer)
        for i in todo:
            if len(prompts[i]) >= loaded.context_length:
                raise InvalidInput(
                    f"instruction {i} (counting from 0) is {len(prompts[i])} tokens through the chat template, "
                    f"and {spec.model} takes at most {loaded.context_length}: shorten it or leave it out"
                )
        decode = _hf_decoder(loaded, settings)
    # Longest first: batches of similar lengths pad little. The outputs do not depend on the order.
    order = sorted(todo, key=lambda i: (-len(prompts[i]), i))
    finished: list[tuple[int, GeneratedOutput]] = []
    started = time.monotonic()
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        made = [
            (i, _output(instructions[i], decoded, generator))
            for i, decoded in zip(batch, decode([prompts[i] for i in batch]), strict=True)
        ]
        if progress:
            progress.append(made)
        finished += made
        log.info(
            "outputs generated",
            extra={
                "model": spec.model,
                "done": len(finished),
                "of": len(order),
                "seconds": time.monotonic() - started,
            },
        )
    return finished


def _output(instruction: Instruction, decoded: Decoded, generator: str) -> GeneratedOutput:
    """The record of one output, its text cut to the bound every outputs file is read with."""
    text, finish = decoded.text, decoded.finish_reason
    if len(text) > MAX_TEXT_CHARS:  # tens of thousands of tokens of long ones (runs of spaces in code)
        text, finish = text[:MAX_TEXT_CHARS], "length"
    return GeneratedOutput(
        instruction.instruction, instruction.dataset, text, generator, decoded.tokens, finish
    )


def _load_tokenizer(spec: RunSpec, args: dict[str, Any]) -> Any:
    """The tokenizer of the evaluated model: an adapter's own when it has one, else its base model's."""
    transformers = quiet_transformers()
    where = _hub_options(spec)
    repo, revision = args["pretrained"], args.get("revision")
    options: dict[str, Any] = {"trust_remote_code": False, **where}
    if "peft" in args:
        own = transformers.utils.cached_file(
            args["peft"],
            "tokenizer_config.json",
            revision=args["peft_revision"],
            _raise_exceptions_for_missing_entries=False,
            **where,
        )
        if own is not None:
            # An adapter has no config.json, which AutoTokenizer reads: its base model's stands in.
            options["config"] = transformers.AutoConfig.from_pretrained(repo, revision=revision, **options)
            repo, revision = args["peft"], args["peft_revision"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(repo, revision=revision, **options)
    if not tokenizer.chat_template:
        raise NoChatTemplate(
            f"rule 'chat template': the tokenizer of {repo} at {revision or 'main'} has no chat template, and "
            "a judged leaderboard prompts the model through it. Fix: evaluate a chat model, or add a "
            "chat_template to its tokenizer_config.json (or a chat_template.jinja)"
        )
    return tokenizer


def _hub_options(spec: RunSpec) -> dict[str, Any]:
    """Where the weights are read from: the run's model store (offline), or the Hub cache the environment
    names."""
    return {"cache_dir": spec.model_store, "local_files_only": True} if spec.model_store else {}


def _load_hf(spec: RunSpec, args: dict[str, Any], tokenizer: Any) -> LoadedModel:
    import torch

    transformers = quiet_transformers()
    precision = Precision(spec.precision)
    device = args.get("device", "cuda")
    options: dict[str, Any] = {"dtype": getattr(torch, args["dtype"]), **_hub_options(spec)}
    if precision in (Precision.INT8, Precision.INT4, Precision.GPTQ):
        from backend.evaluation.quantization import bitsandbytes_config, check_precision_available

        check_precision_available(precision)
        flags: dict[str, Any] = {key: args[key] for key in ("load_in_8bit", "load_in_4bit") if key in args}
        if flags:
            options["quantization_config"] = bitsandbytes_config(flags)
        options["device_map"] = {"": device}  # quantized weights are placed as they load
    elif args.get("parallelize"):
        options["device_map"] = "auto"  # accelerate spreads the layers over every visible GPU
    if spec.model_store:  # transformers looks for an adapter_config.json ignoring the two (5.25)
        options["adapter_kwargs"] = _hub_options(spec)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args["pretrained"],
        revision=args.get("revision"),
        trust_remote_code=False,
        use_safetensors=True,
        **options,
    )
    if "peft" in args:
        from huggingface_hub import snapshot_download
        from peft import PeftModel

        adapter, adapter_options = args["peft"], {"revision": args["peft_revision"]}
        if spec.model_store:  # its commit's folder: peft asks the Hub unless HF_HUB_OFFLINE was set at import
            adapter = snapshot_download(adapter, **adapter_options, **_hub_options(spec))
            adapter_options = {}
        with warnings.catch_warnings():  # peft 0.21 asks transformers 5 what it deprecated: not ours to fix
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False, **adapter_options)
    if "device_map" not in options:
        model.to(device)
    else:
        device = str(next(model.parameters()).device)  # where the inputs go: the first layer's device
    model.eval()
    loaded = LoadedModel.of(spec.model, spec.sha, model, tokenizer, device)
    # Only the decoding asked for: the repository's generation_config.json (sampling, repetition penalty,
    # suppressed tokens...) would otherwise fill every setting generate() is not given.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.generation_config = transformers.GenerationConfig(
        eos_token_id=sorted(loaded.eos_ids), pad_token_id=_pad_id(loaded)
    )
    log.info("model loaded", extra={"model": spec.model, "sha": spec.sha, "model_arguments": args})
    return loaded


def _pad_id(loaded: LoadedModel) -> int:
    pad = loaded.tokenizer.pad_token_id
    if isinstance(pad, int):
        return pad
    return min(loaded.eos_ids) if loaded.eos_ids else 0


def _hf_decoder(
    loaded: LoadedModel, settings: GenerationSettings
) -> Callable[[list[list[int]]], list[Decoded]]:
    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    pad = _pad_id(loaded)
    eos = loaded.eos_ids
    tokenizer = loaded.tokenizer

    def text_of(tokens: list[int]) -> str:
        return str(tokenizer.decode(tokens, skip_special_tokens=True))

    class Ends(StoppingCriteria):
        """Ends each row on its own: at an end of turn, a stop sequence, or its token budget."""

        def __init__(self, offset: int, budgets: list[int]) -> None:
            self.offset = offset
            self.budgets = budgets
            self.ended: dict[int, int] = {}  # row -> tokens generated when it ended

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            count = input_ids.shape[1] - self.offset
            for row, budget in enumerate(self.budgets):
                if row in self.ended:
                    continue
                new = input_ids[row, self.offset :].tolist()
                if (
                    new[-1] in eos
                    or count >= budget
                    or (settings.stop and stop_at(text_of(new), settings.stop) is not None)
                ):
                    self.ended[row] = count
            return torch.tensor(
                [row in self.ended for row in range(len(self.budgets))], device=input_ids.device
            )

    def decode(prompts: list[list[int]]) -> list[Decoded]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        budgets = [min(settings.max_new_tokens, loaded.context_length - len(p)) for p in prompts]
        ends = Ends(width, budgets)
        config = GenerationConfig(
            max_new_tokens=max(budgets),
            do_sample=False,
            num_beams=1,
            eos_token_id=sorted(eos),
            pad_token_id=pad,
        )
        with loaded.lock, torch.inference_mode():
            torch.manual_seed(settings.seed)
            out = loaded.model.generate(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([ends]),
            )
        results = []
        for row in range(len(prompts)):
            generated = out[row, width:].tolist()[: ends.ended.get(row, budgets[row])]
            content = generated
            finish = "length"
            for position, token in enumerate(generated):
                if token in eos:
                    content, finish = generated[:position], "stop"
                    break
            text = text_of(content)
            cut = stop_at(text, settings.stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
            results.append(Decoded(text, len(generated), finish))
        return results

    return decode


def _vllm_decoder(
    spec: RunSpec, args: dict[str, Any], settings: GenerationSettings
) -> Callable[[list[list[int]]], list[Decoded]]:
    """vllm's engine over the same prompt tokens; it cuts stop sequences from the text itself."""
    import vllm

    engine: dict[str, Any] = {
        key: args[key]
        for key in ("quantization", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization")
        if key in args
    }
    if spec.model_store:
        engine["download_dir"] = spec.model_store
    llm = vllm.LLM(
        model=args["pretrained"],
        revision=args["revision"],
        tokenizer_revision=args["revision"],
        dtype=args["dtype"],
        trust_remote_code=False,
        seed=settings.seed,
        **engine,
    )
    sampling = vllm.SamplingParams(
        temperature=0, max_tokens=settings.max_new_tokens, stop=list(settings.stop), seed=settings.seed
    )

    def decode(prompts: list[list[int]]) -> list[Decoded]:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False)
        return [
            Decoded(
                o.outputs[0].text,
                len(o.outputs[0].token_ids),
                "length" if o.outputs[0].finish_reason == "length" else "stop",
            )
            for o in outs
        ]

    return decode
