"""The Python API: one function per CLI command (`python -m nml_core <command>` = the function of that name) and
what the app's pages read. Each function orchestrates: it loads, calls the engine, writes the run dir. Every
function that computes takes `device` ("auto" | "cpu" | "cuda", nml_core.device).

Split by job: training, baselines, evaluation, students (export, generate), hardware (latency, profile, what-if),
finetuning, catalog. The pages import only this package and the app glue (tests/test_structure.py), so the names
they read from the engine are re-exported here, once.
"""
from .. import jobs, report
from ..analysis import budget, whatif
from ..analysis.finetune_results import summarize
from ..analysis.finetune_results import verdict as finetune_verdict
from ..analysis.generate import diagnose, generate_ids
from ..analysis.grid import subnet_row
from ..analysis.latency import bench_widths
from ..analysis.pareto import COST, QUALITY, pareto_front, run_points
from ..arch.gpt2 import cost
from ..data.sources import has_tokens, save_text_upload
from ..data.tasks import TASKS
from ..device import device_info, set_threads
from ..errors import NMLError
from ..nesting.depth import parse_depths, subnets
from ..nesting.width import WidthSpec, available_widths, parse_axes, parse_widths
from ..hub import HUB_TEACHERS, hub_status
from ..store.liveness import resume_hint, run_state
from ..store.models import load_gpt2, load_run_model, run_config, run_tokens, same_teacher
from ..store.runs import load_run, read_metrics
from ..training.config import TrainConfig
from ..training.estimate import FollowUps, estimate
from ..training.finetune import STARTS, FinetuneConfig
from .baselines import baseline, order_fixed
from .catalog import list_runs
from .evaluation import GRID_TOKENS, evaluate_grid, evaluate_run, evaluate_width
from .finetuning import finetune
from .hardware import bench_run, budget_search, profile_device
from .students import Generation, export, export_zip, generate
from .training import cache_teacher, pretrain, resolve_data, train_nested
