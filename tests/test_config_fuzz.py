"""Bad configuration at scale: generated override lists, run through the real command's start-up
(`python train.py --cfg job <overrides>`: every check, then Hydra's own composition, and no
training), either pass or are refused with mnist99's one-paragraph error and exit status 2, never
a traceback."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_in_process
from mnist99.schema import PARTS, RUN

EXAMPLES = 50  # docs/troubleshooting.md says how many (test_the_documented_number_of_examples)

SECTION_OF = {"mnist99.data.": "data", "mnist99.models.": "model", "torch.optim.lr_scheduler.": "scheduler", "torch.optim.": "optimizer",
              "lightning.": "trainer"}
SCHEMA_KEYS = {f"{next(s for p, s in SECTION_OF.items() if t.startswith(p))}.{k}" for t, rules in PARTS.items() for k in rules}
# every key the schema checks, and others a user sets
REAL_KEYS = sorted({*SCHEMA_KEYS, *RUN, "data.mean", "trainer.precision", "trainer.gpus", "trainer.devices",
                    "model.net.hidden_size", "test", "matmul_precision", "callbacks.ema.decay"})
GROUPS = {"model": ["cnn", "mlp", "linear", "linear_scratch", "resnet18", "stack_cnn"], "optimizer": ["adam", "adamw", "sgd"],
          "scheduler": ["none", "onecycle", "cosine"], "augment": ["none", "shift", "affine"], "trainer": ["cpu", "default", "ddp"],
          "logger": ["csv", "none", "tensorboard"], "debug": ["fdr", "limit", "overfit"], "experiment": ["fast", "best", "blog_mlp"]}


def mostly(likely, other):
    """`likely` three times in four, else `other`."""
    return st.integers(0, 3).flatmap(lambda i: likely if i else other)


name = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
value = st.one_of(
    st.integers(-10**15, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "null", "true", "false", "[]", "[1,2]", "[0.9,0.99]", "{}", "abc", "'quoted'", "${nope}", "1e400",
                     "-0", "0x10", "0", "1", "0.5"]),
    st.text(alphabet=string.printable.strip(), max_size=12),
)
key = mostly(st.sampled_from(REAL_KEYS), st.one_of(st.builds(lambda a, b: f"{a}.{b}", name, name), name))  # else misspelt
key_value = mostly(st.builds(lambda k, v: f"{k}={v}", key, value), st.sampled_from(REAL_KEYS).map(lambda k: f"~{k}"))
group_choice = mostly(
    st.sampled_from(list(GROUPS)).flatmap(lambda g: st.sampled_from(GROUPS[g]).map(lambda o: f"{g}={o}")),
    st.builds(lambda g, o: f"{g}={o}", st.sampled_from(list(GROUPS)), name),  # an unknown option
)
# a user's line: a group option or two, then keys
overrides = st.builds(lambda groups, keys: groups + keys, st.lists(group_choice, max_size=2),
                      st.lists(key_value, max_size=3)).filter(bool)


def start(*args: str):
    """`python train.py --cfg job ARGS` in this process: the checks of every run, then Hydra prints
    the config it would run instead of running it."""
    return run_in_process("train", "--cfg", "job", *args)


def refusal(proc) -> str | None:
    """The one-paragraph refusal of a finished start, None when it passed; anything else fails."""
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said and "Config search path" not in said, said[-3000:]
    if proc.returncode == 0:
        assert "optimizer:" in proc.stdout, said[-3000:]  # the composed config, printed
        return None
    message = proc.stderr.strip()
    assert proc.returncode == 2 and message.startswith("mnist99: error: ") and "\n" not in message, (proc.returncode, said[-3000:])
    return message


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_generated_overrides_pass_or_are_refused_in_one_paragraph(args):
    refusal(start(*args))


def test_the_command_accepts_good_overrides_and_names_bad_ones():
    proc = start("model=mlp", "optimizer.lr=0.1", "data.batch_size=64")
    assert refusal(proc) is None and "lr: 0.1" in proc.stdout and "batch_size: 64" in proc.stdout
    for bad, named in (["data.std=abc"], "data.std"), \
                      (["model=nope"], "no option 'nope' in the config group 'model'"), \
                      (["data.batch_size=${nope}"], "cannot be read"), (["model=null"], "cannot be composed"), \
                      (["~data.batch_size"], "data.batch_size is missing"), \
                      (["optimizer=sgd", "optimizer.momentum=1"], "optimizer.momentum=1 is impossible"):
        message = refusal(start(*bad))
        assert message and named in message, (bad, message)


def test_the_documented_number_of_examples():
    from conftest import ROOT

    assert f"{EXAMPLES} generated override lists" in (ROOT / "docs" / "troubleshooting.md").read_text()
