"""The commands `train`, `eval` and `predict` (python train.py / eval.py / predict.py, or the
mnist99-train / mnist99-eval / mnist99-predict entry points): argv, Hydra's main, exit codes.
What they run is the library (mnist99.pipeline, mnist99.evaluate, mnist99.predict)."""

from __future__ import annotations

import re
import string
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

from omegaconf import OmegaConf

from mnist99 import console, trusted
from mnist99.config import (CONFIG_DIR, compose_checked, expand_shorthands, flag_suggestions, group_options, keys_not_taken,
                            register_resolvers, unknown_group_options, unknown_override_keys)
from mnist99.errors import ConfigError, Mnist99Error
from mnist99.schema import is_number
from mnist99.stopping import stop_on_sigterm, stop_signal, stopped_by

# What Hydra itself may build as it starts a command (conf/hydra/: a log formatter, the sweep's
# summary, the sweeper): the libraries' families and the parts of mnist99 those configs name.
HYDRA_WHITELIST = trusted.allowed(OmegaConf.load(Path(CONFIG_DIR) / "hydra" / "default.yaml"))


def setup_process(quiet_lightning: bool = False) -> None:
    """Once before Hydra starts: mnist99's resolvers, SIGTERM as Ctrl-C, no pointless warnings (and, for
    eval and predict, none of Lightning's notices: a training run's trainer silences them itself)."""
    register_resolvers()
    stop_on_sigterm()
    if quiet_lightning:
        console.quiet_lightning()
    else:
        console.quiet_warnings()


def fail(message: str, code: int = 2) -> NoReturn:
    """The one-paragraph error every command ends with when the user can fix the problem."""
    print(f"\nmnist99: error: {message}\n", file=sys.stderr)
    sys.exit(code)


@contextmanager
def stops_end(what: str) -> Iterator[None]:
    """Around eval and predict, which keep nothing half-done: Ctrl-C or SIGTERM (a KeyboardInterrupt,
    or Lightning's exit after one) ends the command in one line with the shell's status, 130 or 143."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        signum = stop_signal(e)
        if signum is None:
            raise
        print(f"\nmnist99: {stopped_by(signum)} before {what} finished. Run the command again for it.\n", file=sys.stderr)
        sys.exit(128 + signum)


# Hydra's flags that take a value (`--cfg job`), and those after which no run starts.
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p",
               "--experimental-rerun")
COMPLETION = ("install", "uninstall", "query")  # --shell-completion's subcommands
NO_RUN_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version")
# Every flag of Hydra's parser (hydra._internal.utils.get_args_parser); argparse also takes a long one abbreviated
HYDRA_LONG_FLAGS = ("--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run", "--multirun",
                    "--shell-completion", "--config-path", "--config-name", "--config-dir", "--experimental-rerun", "--info")
HYDRA_SHORT_FLAGS = ("-h", "-c", "-p", "-r", "-m", "-sc", "-cp", "-cn", "-cd", "-i")
# Hydra does one of these at a time, and says so with a traceback
MODES = (("--run", "-r"), ("--multirun", "-m"), ("--cfg", "-c"), ("--info", "-i"), ("--shell-completion", "-sc"))


def versions_line() -> str:
    """`--version`: mnist99's, and the versions of what it runs on, read without importing them."""
    from mnist99 import __version__
    from mnist99.run_info import package_versions

    stack = ", ".join(f"{name} {v}" for name, v in package_versions().items() if name != "mnist99")
    return f"mnist99 {__version__} ({stack}; Python {sys.version.split()[0]})"


def print_help(config_dir: str = CONFIG_DIR) -> None:
    """`--help` as Hydra prints it from the help template (conf/hydra/default.yaml), its groups listed
    from the config folders: Hydra composes each group for the list, a second a user waits for."""
    template = OmegaConf.load(Path(config_dir) / "hydra" / "default.yaml").help.template
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in group_options(config_dir).items())
    print(string.Template(template).safe_substitute(APP_CONFIG_GROUPS=groups))  # as Hydra fills it ($$ is $)


def is_hydra_flag(arg: str) -> bool:
    """Does Hydra's parser take `arg` (the part before any `=`) as one of its flags: a long one, whole
    or abbreviated, a short one (`-cjob` is `-c job`), `--` or a negative number (a value, to argparse)?"""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        return arg == "--" or (name != "--" and any(flag.startswith(name) for flag in HYDRA_LONG_FLAGS))
    return name in HYDRA_SHORT_FLAGS or name[:2] in ("-c", "-p") or bool(re.fullmatch(r"-[\d.].*", name))


def long_flag(flag: str) -> str:
    """Hydra's long flag that `flag` abbreviates, as argparse reads it (`--multi`: --multirun); else flag."""
    found = [f for f in HYDRA_LONG_FLAGS if f.startswith(flag)] if flag.startswith("--") and flag != "--" else []
    return found[0] if len(found) == 1 else flag


def split_argv(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hydra's command line as ({flag: value or ""}, overrides). A flag Hydra does not know (`--epochs 3`,
    `--lr=0.1`) keeps its value, the next word when that is not an override or a flag."""
    flags, overrides, i = {}, [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and "=" in arg and arg.split("=", 1)[0] in VALUE_FLAGS:  # --cfg=job
            flags[arg.split("=", 1)[0]] = arg.split("=", 1)[1]
        elif arg in VALUE_FLAGS:
            flags[arg] = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        elif arg.startswith("-") and not is_hydra_flag(arg):
            name, eq, value = arg.partition("=")
            following = args[i + 1] if i + 1 < len(args) else "="
            if not eq and "=" not in following and (not following.startswith("-") or is_number(following)):  # --lr -1 too
                value, i = following, i + 1
            flags[name] = value
        elif arg.startswith("-"):
            flags[arg] = ""
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def unknown_flag(flags: dict[str, str], args: list[str], script: str, config_name: str, config_dir: str) -> str | None:
    """A message for the first flag Hydra does not know, `--epochs 3`, naming the override meant
    (trainer.max_epochs=3): Hydra would read `3` as an override and fail in its grammar's words."""
    for flag, value in flags.items():
        if is_hydra_flag(flag) and not (flag == "--" and value):  # `--=3` is no end of the options
            continue
        shown = f"{flag}={value}" if f"{flag}={value}" in args else f"{flag} {value}".strip()  # as typed
        meant = flag_suggestions(flag, value or None, config_name, config_dir)
        advice = (f"Did you mean {' or '.join(meant)}?" if meant else
                  f"python {script} --help lists the keys, --hydra-help Hydra's own flags (--cfg job, -m, ...).")
        return f"{shown}: {script} has no option {flag}; settings are key=value overrides, without dashes. {advice}"
    return None




def checked_argv(argv: list[str], config_name: str, check_values: bool = False) -> list[str]:
    """argv with trainer.gpus=N expanded, or a one-paragraph exit for an unknown option, a misspelt key
    or, with check_values, a config that cannot run: before Hydra makes a folder, without torch."""
    argv = [argv[0], *expand_shorthands(argv[1:])]
    flags, overrides = split_argv(argv[1:])
    if "--version" in flags:
        print(versions_line())
        sys.exit(0)
    config_dir = flags.get("--config-path") or flags.get("-cp") or CONFIG_DIR
    name = flags.get("--config-name") or flags.get("-cn") or config_name
    message = unknown_flag(flags, argv[1:], Path(argv[0]).name, name, str(config_dir))
    if message:
        fail(message)
    modes = [m[0] for m in MODES if any(f in m for f in map(long_flag, flags))]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} cannot be given together: Hydra does one of {', '.join(m[0] for m in MODES)} at a time.")
    if ("--shell-completion" in flags or "-sc" in flags) and not any(o.split("=", 1)[0] in COMPLETION for o in overrides):
        fail(f"--shell-completion needs one of {', '.join(c + '=' for c in COMPLETION)}, e.g. "
             f"eval \"$(python {Path(argv[0]).name} -sc install=bash)\" to complete {Path(argv[0]).name}'s options and keys "
             "in bash (zsh and fish too: install=zsh, install=fish).")
    queries = [o.split("=", 1)[1] for o in overrides if o.startswith("query=")]
    if ("--shell-completion" in flags or "-sc" in flags) and queries:
        from mnist99.cli.completion import completion_query

        completion_query(queries[-1], name, str(config_dir))
    if any(f in flags for f in NO_RUN_FLAGS):
        return argv
    sweep = "-m" in flags or "--multirun" in flags
    try:
        if sweep:  # its values are checked job by job: one bad value fails its job, not the sweep
            message = (keys_not_taken(overrides, name, str(config_dir)) or unknown_group_options(overrides, str(config_dir))
                       or unknown_override_keys(overrides, name, str(config_dir)))
            if message:
                raise ConfigError(message)
        else:
            compose_checked(overrides, str(config_dir), name, check_values=check_values)
    except Mnist99Error as e:
        fail(str(e))
    return argv
