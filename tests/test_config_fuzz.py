"""Bad configuration at scale: generated override lists either validate or fail with mnist99's own
one-paragraph error (ConfigError), never a bare Python exception."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist99.config import compose_checked
from mnist99.errors import ConfigError

REAL_KEYS = ["optimizer.lr", "optimizer.weight_decay", "data.batch_size", "data.val_size", "data.num_workers", "data.std",
             "data.mean", "data.loader", "data.normalize", "trainer.max_epochs", "trainer.limit_train_batches",
             "trainer.precision", "trainer.gpus", "trainer.accelerator", "trainer.devices", "model.num_classes",
             "model.in_channels", "model.net.hidden_size", "seed", "test", "matmul_precision", "callbacks.ema.decay"]
GROUPS = {"model": ["cnn", "mlp", "linear", "linear_scratch", "resnet18", "stack_cnn"], "optimizer": ["adam", "adamw", "sgd"],
          "scheduler": ["none", "onecycle", "cosine"], "augment": ["none", "shift", "affine"], "trainer": ["cpu", "default", "ddp"],
          "logger": ["csv", "none", "tensorboard"], "debug": ["fdr", "limit", "overfit"], "experiment": ["fast", "best", "blog_mlp"]}

name = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
value = st.one_of(
    st.integers(-10**15, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "null", "true", "false", "[]", "[1,2]", "{}", "abc", "'quoted'", "${nope}", "1e400", "-0", "0x10"]),
    st.text(alphabet=string.printable.strip(), max_size=12),
)
key = st.one_of(st.sampled_from(REAL_KEYS), st.builds(lambda a, b: f"{a}.{b}", name, name), name)
key_value = st.builds(lambda k, v: f"{k}={v}", key, value)
group_choice = st.one_of(
    st.sampled_from(list(GROUPS)).flatmap(lambda g: st.sampled_from(GROUPS[g]).map(lambda o: f"{g}={o}")),
    st.builds(lambda g, o: f"{g}={o}", st.sampled_from(list(GROUPS)), name),  # unknown options
)
overrides = st.lists(st.one_of(key_value, group_choice), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_generated_overrides_validate_or_fail_clearly(args):
    try:
        compose_checked(args)
    except ConfigError as e:
        message = str(e).strip()
        assert message and "\n" not in message, message  # one paragraph, Hydra's refusals included


def test_the_checks_accept_good_overrides_and_name_bad_ones():
    assert compose_checked(["model=mlp", "optimizer.lr=0.1", "data.batch_size=64"]).optimizer.lr == 0.1
    for bad, named in (["optimizer.lr=-1"], "optimizer.lr=-1"), (["data.std=abc"], "data.std"), (["model=nope"], "no option 'nope' in the config group 'model'"), \
                      (["data.batch_size=${nope}"], "cannot be read"), (["model=null"], "cannot be composed"):
        try:
            compose_checked(bad)
        except ConfigError as e:
            assert named in str(e), (bad, str(e))
        else:
            raise AssertionError(f"{bad} was accepted")
