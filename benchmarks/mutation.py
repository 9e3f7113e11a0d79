"""Mutation testing of the core with mutmut: how many planted one-line bugs the tests catch.

    python benchmarks/mutation.py                 # every module group (make mutate)
    python benchmarks/mutation.py processes ema   # some groups
    python benchmarks/mutation.py --jobs 2        # mutmut's parallel workers (default: cores)

Each group is a part of the core and the fast tests that exercise it. For each, mutmut (the
`dev` extra) mutates the group's files (operators, constants, arguments, returns) and runs,
for each mutant, the group's tests that cover the mutated function; a mutant is killed when
a test fails. The run happens in .mutation/GROUP (mutmut's `mutants/` copy of the code, kept
between runs so that a second run only redoes what changed), and the table goes to
benchmarks/results/mutation.md: killed / survived / timed out / not covered per group, with
the surviving mutants listed by name (`cd .mutation/GROUP && mutmut show NAME` prints one).
Mutants judged equivalent (no behaviour can tell them apart) are listed in EQUIVALENT with
the reason and counted apart. Mutants that change only where a tensor is placed (a `device=`
argument, `.to(x.device)`, a `..._device` variable) cannot be told apart on a machine with one
device; they are found by reading each survivor's diff and counted in their own column.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
RESULTS = ROOT / "benchmarks" / "results" / "mutation.md"
SRC = "src/scorelab"

# group: (files to mutate, the fast tests that check them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "processes": (
        [f"{SRC}/processes/ddpm.py", f"{SRC}/processes/schedules.py", f"{SRC}/processes/sde.py"],
        [
            "tests/test_ddpm.py",
            "tests/test_schedules.py",
            "tests/test_sde.py",
            "tests/test_vlb.py",
            "tests/test_samplers.py",
        ],
    ),  # fmt: skip
    "parameterization": (
        [f"{SRC}/processes/parameterization.py"],
        ["tests/test_parameterization.py", "tests/test_vlb.py", "tests/test_score_matching.py"],
    ),
    "samplers": (
        [
            f"{SRC}/samplers/ancestral.py",
            f"{SRC}/samplers/ddim.py",
            f"{SRC}/samplers/continuous.py",
            f"{SRC}/samplers/timesteps.py",
            f"{SRC}/samplers/unipc.py",
        ],
        ["tests/test_samplers.py", "tests/test_samplers_all.py", "tests/test_solver_orders.py"],
    ),  # fmt: skip
    "guidance": ([f"{SRC}/samplers/guidance.py"], ["tests/test_guidance.py"]),
    "objectives": (
        [
            f"{SRC}/objectives/denoising.py",
            f"{SRC}/objectives/score_matching.py",
            f"{SRC}/objectives/hybrid.py",
            f"{SRC}/objectives/conditional.py",
        ],
        [
            "tests/test_objectives.py",
            "tests/test_score_matching.py",
            "tests/test_likelihood.py",
            "tests/test_conditional.py",
        ],
    ),  # fmt: skip
    "likelihood": (
        [f"{SRC}/likelihood.py", f"{SRC}/numerics/divergence.py", f"{SRC}/numerics/odeint.py"],
        ["tests/test_likelihood.py", "tests/test_divergence.py", "tests/test_odeint.py"],
    ),
    "metrics": (
        [f"{SRC}/evaluation/metrics.py"],
        ["tests/test_metrics.py", "tests/test_image_metrics.py"],
    ),
    "training": (
        [f"{SRC}/training/ema.py", f"{SRC}/training/checkpoint.py"],
        ["tests/test_training.py", "tests/test_failing_writes.py", "tests/test_checkpoint.py"],
    ),
}

# mutant name -> why no test can tell it from the original
# survivors that are not equivalent: the behaviour they change, and why no test catches it yet
NOT_KILLED: dict[str, str] = {
    "scorelab.numerics.divergence.x__prepare__mutmut_5": (
        "always detaching x cuts a graph through x; no caller differentiates through x today "
        "(ISM and SSM differentiate through the network's parameters)"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_39": (
        "a stopping threshold of 1e-12 / span instead of 1e-12 span only adds a step of "
        "round-off size over long spans; the result is the same to rounding"
    ),
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_129": (
        "fails only when the bracket ends exactly one entry below the median's rank (an "
        "IndexError in kthvalue); no seeded case found that lands there"
    ),
    "scorelab.training.checkpoint.x__keep_previous__mutmut_21": (
        "the hard link is left behind only when renaming it over the previous checkpoint "
        "fails, which needs a fault between two renames in one folder"
    ),
    "scorelab.training.checkpoint.x_save_checkpoint__mutmut_42": (
        "matters only when putting the checkpoint back fails too (two faults in one save)"
    ),
}
# the median bandwidth's sampled bracket: cost, not value
_BRACKET = (
    "the sampled bracket only sets how many passes find the median; a miss widens it until "
    "the exact median is inside (same value, another pass at most)"
)
EQUIVALENT: dict[str, str] = {
    "scorelab.samplers.unipc.x__step__mutmut_13": (
        "rho and the differences are built to the same length: strict changes nothing"
    ),
    "scorelab.samplers.unipc.x__step__mutmut_16": (
        "rho and the differences are built to the same length: strict changes nothing"
    ),
    "scorelab.samplers.unipc.x__step__mutmut_17": (
        "rho and the differences are built to the same length: strict changes nothing"
    ),
    "scorelab.samplers.unipc.x_unipc_weights__mutmut_24": (
        "one more b_j is computed, and only the first n are used"
    ),
    "scorelab.samplers.continuous.x__ode_fixed__mutmut_18": (
        "the coefficient at t = 0 is never used: the step to 0 returns the x0 prediction"
    ),
    "scorelab.samplers.timesteps.x_grid_coefficients__mutmut_4": (
        "grids are float64 (make_timesteps): the cast is a no-op"
    ),
    "scorelab.objectives.score_matching.x_tsm_target__mutmut_14": (
        "the objectives draw t in float64 (sample_times): the cast is a no-op"
    ),
    "scorelab.objectives.score_matching.x_tsm_target__mutmut_17": (
        "the objectives draw t in float64 (sample_times): the cast is a no-op"
    ),
    "scorelab.objectives.score_matching.x_tsm_weight__mutmut_12": (
        "the objectives draw t in float64 (sample_times): the cast is a no-op"
    ),
    "scorelab.processes.schedules.xǁDiscreteScheduleǁbeta_rate__mutmut_16": (
        "ceil of a float32 time is the same whether taken in float32 or float64"
    ),
    "scorelab.training.checkpoint.x_read_checkpoint__mutmut_52": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.training.checkpoint.x_read_checkpoint__mutmut_54": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.training.checkpoint.x_read_checkpoint__mutmut_55": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.numerics.divergence.x_sample_probes__mutmut_19": (
        "torch.randint(2, shape) is randint(0, 2, shape)"
    ),
    "scorelab.numerics.divergence.x_sample_probes__mutmut_42": "v.to(None) is v",
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_3": (
        "a step limit of 10,001 instead of 10,000: no test run comes near either"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_32": (
        "nfe is 0 before the first call: = 1 and += 1 agree"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_120": (
        "err exactly 1.0 (accept or reject at the boundary) does not occur in floats"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_38": (
        "|t1 - t| exactly equal to 1e-12 span does not occur in floats"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_8": (
        "t1 == t0 returns before direction is used (span 0)"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_92": (
        "no weight of the tableau is 1.0; zero weights add 0 * k"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_106": (
        "no weight of the tableau is 1.0; zero weights add 0 * k"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_64": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_67": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_68": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_86": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_89": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_90": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_100": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_103": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.numerics.odeint.x_odeint_rk45__mutmut_104": (
        "the tableau's rows have as many weights as there are stages: strict changes nothing"
    ),
    "scorelab.training.ema.xǁEMAǁ_live__mutmut_27": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁ_live__mutmut_31": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁ_live__mutmut_32": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁstate_dict__mutmut_4": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁstate_dict__mutmut_7": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁstate_dict__mutmut_8": (
        "names and shadow are built together (and the module's names checked): equal lengths"
    ),
    "scorelab.training.ema.xǁEMAǁ_live__mutmut_39": "on one device s.to(v.device) is s itself",
    "scorelab.training.ema.xǁEMAǁ_live__mutmut_40": (
        "reached only when the module moved to another device"
    ),
    "scorelab.training.ema.xǁEMAǁ_floating__mutmut_1": (
        "keep_vars=False gives detached views of the same storage: the same values are read"
    ),
    "scorelab.training.ema.xǁEMAǁ_floating__mutmut_2": (
        "keep_vars=False gives detached views of the same storage: the same values are read"
    ),
    "scorelab.training.checkpoint.x_save_checkpoint__mutmut_17": "moved = None is falsy, as False",
    "scorelab.training.checkpoint.x_save_checkpoint__mutmut_28": (
        "fsync of a file opened read-only flushes it as well (Linux)"
    ),
    "scorelab.training.checkpoint.x_describe_last_checkpoint__mutmut_7": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.training.checkpoint.x_describe_last_checkpoint__mutmut_9": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.training.checkpoint.x_describe_last_checkpoint__mutmut_10": (
        "the prefixes only limit which tensors are decoded; the metadata read is the same"
    ),
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_6": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_38": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_41": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_47": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_74": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_75": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_76": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_77": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_78": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_84": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_87": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_88": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_96": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_98": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_99": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_125": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_128": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_135": _BRACKET,
    "scorelab.evaluation.metrics.x__median_squared_distance__mutmut_137": _BRACKET,
    "scorelab.evaluation.metrics.x__mmd2_unbiased__mutmut_9": ("diagonal=None is falsy, as False"),
    "scorelab.evaluation.metrics.x__mmd2_unbiased__mutmut_23": ("diagonal=None is falsy, as False"),
    "scorelab.evaluation.metrics.x__quantiles__mutmut_11": (
        "past m - 1 the upper index is clamped to m - 1 too: both neighbours are the last value"
    ),
    "scorelab.evaluation.metrics.x__quantiles__mutmut_13": (
        "past m - 1 the upper index is clamped to m - 1 too: both neighbours are the last value"
    ),
    "scorelab.evaluation.metrics.x__quantiles__mutmut_27": (
        "past m - 1 the upper index is clamped to m - 1 too: both neighbours are the last value"
    ),
    "scorelab.evaluation.metrics.x__quantiles__mutmut_5": (
        "torch.sort's default dim is -1, which is 1 for (P, m)"
    ),
    "scorelab.processes.parameterization.x__wide__mutmut_4": (
        "the MPS branch: no tensor of the test machine has that device type"
    ),
    "scorelab.processes.parameterization.x__wide__mutmut_5": (
        "the MPS branch: no tensor of the test machine has that device type"
    ),
    "scorelab.processes.parameterization.x_as_eps_fn__mutmut_33": (
        "to_eps of a score prediction is -sigma pred: it does not read x_t"
    ),
    "scorelab.processes.parameterization.x_score_from_eps__mutmut_23": (
        "from_eps to a score is -eps / sigma: it does not read x_t"
    ),
    "scorelab.processes.parameterization.x_preconditioned__mutmut_12": (
        "noise_label returns t's dtype already (a cast to it is a no-op)"
    ),
    "scorelab.processes.parameterization.x_split_learned_variance__mutmut_14": (
        "zip of two 2-tuples: strict never has a length to check"
    ),
    "scorelab.processes.parameterization.x_split_learned_variance__mutmut_17": (
        "zip of two 2-tuples: strict never has a length to check"
    ),
    "scorelab.processes.parameterization.x_split_learned_variance__mutmut_20": (
        "zip of two 2-tuples: strict never has a length to check"
    ),
    "scorelab.processes.ddpm.x__approx_std_normal_cdf__mutmut_4": (
        "the added 0.5 cancels in upper - lower (the ends use log_ndtr): last-bit rounding only"
    ),
    "scorelab.processes.ddpm.x_discretized_gaussian_log_likelihood__mutmut_16": (
        "upper is only used where x <= 1 - h; above it the last where takes the upper tail"
    ),
    "scorelab.processes.ddpm.x_discretized_gaussian_log_likelihood__mutmut_17": (
        "upper is only used where x <= 1 - h; above it the last where takes the upper tail"
    ),
    "scorelab.processes.ddpm.x_discretized_gaussian_log_likelihood__mutmut_31": (
        "lower is only used where x >= -1 + h; below it the where takes the lower tail"
    ),
    "scorelab.processes.ddpm.x_discretized_gaussian_log_likelihood__mutmut_33": (
        "lower is only used where x >= -1 + h; below it the where takes the lower tail"
    ),
    "scorelab.processes.ddpm.x_reverse_log_variance__mutmut_25": (
        "t_next is used only where s <= 0; 2t + s = 2t - s at s = 0 (s < 0 is outside [0, T])"
    ),
    "scorelab.processes.ddpm.x_reverse_log_variance__mutmut_49": (
        "drops the kind 'beta_tilde', which is posterior_variance's default"
    ),
    "scorelab.processes.ddpm.x_reverse_log_variance__mutmut_59": (
        "drops the kind 'beta_tilde', which is posterior_variance's default"
    ),
    "scorelab.processes.ddpm.x_vlb_term__mutmut_17": (
        "append_dims of a tensor that has x_t.ndim dims already is a reshape to its own shape"
    ),
    "scorelab.processes.schedules.x__cosine__mutmut_2": (
        "a default of the private _cosine; make_schedule clamps every beta to 0.999 after it"
    ),
    "scorelab.processes.schedules.x__cosine__mutmut_23": (
        "alpha_bar scaled by a constant: the ratios, hence the betas, are unchanged (rounding)"
    ),
    "scorelab.processes.schedules.x__cosine__mutmut_24": (
        "alpha_bar scaled by a constant: the ratios, hence the betas, are unchanged (rounding)"
    ),
    "scorelab.processes.schedules.xǁDiscreteScheduleǁlog_alpha_bar__mutmut_14": (
        "t - floor(t) and 1 - frac are exact in t's dtype (for t < 1, 1 - frac multiplies 0)"
    ),
    "scorelab.processes.sde.xǁSDEǁtime_at_log_snr__mutmut_21": (
        "bisection (no closed form): a 61st halving moves t by <= 2^-61 T, below its precision"
    ),
    "scorelab.processes.sde.xǁSDEǁtime_at_log_snr__mutmut_28": (
        "bisection: >= differs only where log_snr(mid) == lam, moving t by <= 2^-60 T"
    ),
    "scorelab.processes.sde.xǁSDEǁtime_at_log_snr__mutmut_9": (
        "the closed forms give t >= 0 for every log-SNR: the lower bound 0 is never reached"
    ),
    "scorelab.samplers.ancestral.x__step_coefficients__mutmut_23": (
        "analytic drops score_step_coefficients' third output; its A and B ignore the variance"
    ),
    "scorelab.samplers.ancestral.x__step_coefficients__mutmut_41": (
        "analytic_variance casts gamma to the dtype of its float64 betas itself"
    ),
    "scorelab.samplers.continuous.x__ode_fixed__mutmut_21": (
        "zip's strict: beta_rate and sigma both come from grid_coefficients of one grid"
    ),
    "scorelab.samplers.continuous.x__ode_fixed__mutmut_24": (
        "zip's strict: beta_rate and sigma both come from grid_coefficients of one grid"
    ),
    "scorelab.samplers.continuous.x__ode_fixed__mutmut_25": (
        "zip's strict: beta_rate and sigma both come from grid_coefficients of one grid"
    ),
    "scorelab.samplers.timesteps.x_grid_coefficients__mutmut_21": (
        "tolist() of a float32 beta_rate gives the same Python floats as of its float64 copy"
    ),
    "scorelab.samplers.timesteps.x_make_timesteps__mutmut_151": (
        "at steps = 1, linspace(0, 1, 1) is [0.0], the zeros(1) of the other branch"
    ),
}


def _config(files: list[str], tests: list[str]) -> str:
    return (
        "[tool.mutmut]\n"
        f"paths_to_mutate = {json.dumps(files)}\n"
        f"only_mutate = {json.dumps(files)}\n"  # the rest of src is copied unmutated
        'source_paths = ["src"]\n'
        f"tests_dir = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", '
        '"-m", "not slow", "--timeout", "120"]\n'
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n"
    )


def _prepare(group: str) -> Path:
    files, tests = GROUPS[group]
    work = WORK / group
    work.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        link = work / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    # pytest's own settings (markers, timeout) and mutmut's for this group
    pyproject = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(pyproject.split("[tool.ruff]")[0] + _config(files, tests))
    return work


def _statuses(work: Path, files: list[str]) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code  # the dev extra

    out = {}
    for f in files:
        meta = work / "mutants" / f"{f}.meta"
        if not meta.is_file():
            continue
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = status_by_exit_code[code]
    return out


_DEVICE_ARG = re.compile(r",?\s*device\s*=\s*[\w.]+")
_DEVICE_TO = re.compile(r"\.to\((None|[\w.]*device)?\)")
_DEVICE_SET = re.compile(r"^\s*\w*device\s*=.*$")


def _placement(line: str) -> str:
    """A source line with every device placement taken out."""
    if _DEVICE_SET.match(line):
        return ""
    return _DEVICE_TO.sub("", _DEVICE_ARG.sub("", line)).replace("( ", "(").replace(", )", ")")


def device_only(work: Path, name: str, mutmut: str) -> bool:
    """Whether a mutant changes nothing but where tensors are placed (its diff's lines are
    equal once device arguments, .to(device) and device variables are taken out)."""
    out = subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True).stdout
    lines = [x for x in out.splitlines() if not x.startswith(("---", "+++"))]
    old = [x[1:] for x in lines if x.startswith("-")]
    new = [x[1:] for x in lines if x.startswith("+")]
    if not old and not new:
        return False

    def strip(code: list[str]) -> list[str]:
        return [y for y in (re.sub(r"\s+", "", _placement(x)) for x in code) if y]

    return strip(old) == strip(new)


def run_group(group: str, jobs: int) -> dict:
    files, _ = GROUPS[group]
    work = _prepare(group)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [mutmut, "run", "--max-children", str(jobs)],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    statuses = _statuses(work, files)
    if not statuses:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"mutmut found no mutants for {group} (exit {proc.returncode}):\n{tail}")
    counts: dict[str, int] = {}
    for name, status in statuses.items():
        if status == "survived" and name in EQUIVALENT:
            status = "equivalent"
        elif status == "survived" and device_only(work, name, mutmut):
            status = statuses[name] = "device only"
        counts[status] = counts.get(status, 0) + 1
    survivors = sorted(n for n, s in statuses.items() if s == "survived" and n not in EQUIVALENT)
    return {"group": group, "files": files, "counts": counts, "seconds": seconds,
            "survivors": survivors, "total": len(statuses)}  # fmt: skip


def _score(r: dict) -> float:
    c = r["counts"]
    apart = c.get("equivalent", 0) + c.get("device only", 0)
    judged = r["total"] - apart - c.get("no tests", 0) - c.get("skipped", 0)
    return 100.0 * c.get("killed", 0) / judged if judged else float("nan")


def write_table(results: list[dict], jobs: int) -> str:
    lines = [
        "# Mutation testing of the core",
        "",
        f"`make mutate` (mutmut, {jobs} workers, 2-core CPU). Score = killed / (mutants - "
        "equivalent - device only - not covered by the group's tests). Device only: the "
        "mutant changes nothing but where a tensor is placed (`device=`, `.to(x.device)`), "
        "which a CPU-only machine cannot observe. Each row is as of its run; tests "
        "written since count at the group's next run (`python benchmarks/mutation.py GROUP`).",
        "",
        "| group | files | mutants | killed | survived | timeout | not covered | equivalent "
        "| device only | score | minutes | run at (UTC) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    total = {"total": 0, "killed": 0, "survived": 0, "timeout": 0, "no tests": 0, "eq": 0}
    total["device"] = 0
    for r in results:
        c = r["counts"]
        files = ", ".join(f.removeprefix(f"{SRC}/") for f in r["files"])
        lines.append(
            f"| {r['group']} | {files} | {r['total']} | {c.get('killed', 0)} | "
            f"{c.get('survived', 0)} | {c.get('timeout', 0)} | {c.get('no tests', 0)} | "
            f"{c.get('equivalent', 0)} | {c.get('device only', 0)} | {_score(r):.1f}% | "
            f"{r['seconds'] / 60:.1f} | "
            f"{r.get('when', '')} |"
        )
        total["total"] += r["total"]
        total["killed"] += c.get("killed", 0)
        total["survived"] += c.get("survived", 0)
        total["timeout"] += c.get("timeout", 0)
        total["no tests"] += c.get("no tests", 0)
        total["eq"] += c.get("equivalent", 0)
        total["device"] += c.get("device only", 0)
    judged = total["total"] - total["eq"] - total["device"] - total["no tests"]
    score = 100.0 * total["killed"] / judged if judged else float("nan")
    lines.append(
        f"| **all** | | {total['total']} | {total['killed']} | {total['survived']} | "
        f"{total['timeout']} | {total['no tests']} | {total['eq']} | {total['device']} | "
        f"**{score:.1f}%** | "
        f"{sum(r['seconds'] for r in results) / 60:.1f} | |"
    )
    lines += ["", "Surviving mutants (`cd .mutation/GROUP && mutmut show NAME`):", ""]
    for r in results:
        if r["survivors"]:
            lines.append(f"- {r['group']}: " + ", ".join(f"`{n}`" for n in r["survivors"]))
    known = [n for r in results for n in r["survivors"] if n in NOT_KILLED]
    if known:
        lines += [
            "",
            "Surviving mutants that are real changes, and why no test kills them yet:",
            "",
        ]
        lines += [f"- `{n}`: {NOT_KILLED[n]}" for n in known]
    if EQUIVALENT:
        lines += ["", "Equivalent mutants:", ""]
        lines += [f"- `{n}`: {why}" for n, why in sorted(EQUIVALENT.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("groups", nargs="*", choices=[*GROUPS, []], help="default: every group")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--table", action="store_true", help="only rewrite the table from the results")
    args = p.parse_args()
    for group in [] if args.table else args.groups or list(GROUPS):
        print(f"mutating {group} ...", flush=True)
        r = run_group(group, args.jobs)
        print(f"  {r['total']} mutants, {r['counts']}, {_score(r):.1f}% in {r['seconds']:.0f}s")
        r["when"] = time.strftime("%Y-%m-%d %H:%M")
        (WORK / group / "result.json").write_text(json.dumps(r))
    # the table has every group measured so far (one group can be rerun alone)
    results = [
        json.loads((WORK / g / "result.json").read_text())
        for g in GROUPS
        if (WORK / g / "result.json").is_file()
    ]
    for r in results:  # equivalents judged since the group ran
        _recount(r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(write_table(results, args.jobs))
    print(f"wrote {RESULTS}")


def _recount(r: dict) -> None:
    now = [n for n in r["survivors"] if n in EQUIVALENT]
    if now:
        r["survivors"] = [n for n in r["survivors"] if n not in EQUIVALENT]
        r["counts"]["survived"] = r["counts"].get("survived", 0) - len(now)
        r["counts"]["equivalent"] = r["counts"].get("equivalent", 0) + len(now)
    # placement-only survivors of a group that ran before they were told apart
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    placed = [n for n in r["survivors"] if device_only(WORK / r["group"], n, mutmut)]
    if placed:
        r["survivors"] = [n for n in r["survivors"] if n not in placed]
        r["counts"]["survived"] = r["counts"].get("survived", 0) - len(placed)
        r["counts"]["device only"] = r["counts"].get("device only", 0) + len(placed)


if __name__ == "__main__":
    main()
