"""``charter train``: what each trainer does with its composed config and output directory.

Like every module in :mod:`charter.commands`, this is where configs become objects (through
:func:`charter.building.build`); the trainer files only see typed settings. The trainer is
picked by the type of ``cfg.trainer``'s target, a plain ``match``, no registry. With a ``loop``
node (``experiment=loop_cpu``) the command runs the closed loop instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter import run_files, run_state
from charter.building import EngineCache, build, open_call_cache, resolve_path
from charter.commands.generate_stage import run_generate
from charter.commands.judge_stage import run_judge
from charter.commands.pairs_stage import run_pairs
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.jsonl import read_jsonl, write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge
from charter.progress import console, summary_table
from charter.prompts import PromptFields, load_prompts
from charter.trainers.common import TrainResult
from charter.trainers.data import Provenance, load_preference_pairs, load_sft_data
from charter.trainers.dpo import DPOSettings, train_dpo
from charter.trainers.loop import LoopSettings, head_to_head, reward_model_preference
from charter.trainers.online_dpo import OnlineDPOSettings, train_online_dpo
from charter.trainers.reward import RewardModelScorer, RewardSettings, train_reward
from charter.trainers.rl import JudgeReward, RLSettings, train_rl
from charter.trainers.sft import SFTSettings, train_sft


def _prompts(cfg: DictConfig) -> list[Any]:
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    prompts, _ = load_prompts(resolve_path(cfg.prompts.path), fields, limit=cfg.prompts.limit)
    return prompts


def _judge(cfg: DictConfig, engines: EngineCache) -> Any:
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    return build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)


def _pointwise_reward(cfg: DictConfig, engines: EngineCache) -> JudgeReward:
    from charter.judges.pointwise import PointwiseScoreJudge

    judge = _judge(cfg, engines)
    if not isinstance(judge, PointwiseScoreJudge):
        raise InputError("a judge reward needs judge=pointwise", field="judge")
    return JudgeReward(judge, load_constitution(resolve_path(cfg.constitution.path)), cfg.seed)


def _fresh_reward(cfg: DictConfig, engines: EngineCache) -> JudgeReward | None:
    """The over-optimisation guard's independent scorer: the pointwise judge on the judge's
    engine (``fresh_judge=false`` turns the guard's judge off)."""
    from charter.judges.pointwise import PointwiseScoreJudge

    if not cfg.get("fresh_judge"):
        return None
    engine = engines.get(cfg.judge.engine, "judge.engine")
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    return JudgeReward(PointwiseScoreJudge(engine), constitution, cfg.seed)


def _policy_engine(cfg: DictConfig) -> Any:
    def load(model: str) -> Any:
        node = OmegaConf.merge(cfg.generator.engine, {"model": str(model)})
        return build(node, "generator.engine")

    return load


def _report(out_dir: Path, name: str, result: TrainResult, rejects: list[Any]) -> None:
    metrics = {"trainer": name, "model_dir": str(result.model_dir), **result.metrics}
    metrics["losses"] = [round(x, 5) for x in result.losses]
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    if rejects:
        write_jsonl_atomic(out_dir / run_files.REJECTS, [asdict(r) for r in rejects])
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
    summary_table(f"charter train: {name}", {**flat, "rejected rows": len(rejects)})


def train(cfg: DictConfig, out_dir: Path) -> None:
    """``charter train trainer=NAME data=PATH``: train one model, save it with its card."""
    if cfg.get("loop") is not None:
        run_loop(cfg, out_dir)
        return
    if cfg.get("label_curve") is not None:
        from charter.commands.label_curve import run_label_curve

        run_label_curve(cfg, out_dir)
        return
    settings = build(cfg.trainer, "trainer")
    console.print(f"[bold]charter train[/] {type(settings).__name__} -> {out_dir}", soft_wrap=True)
    rejects: list[Any] = []
    match settings:
        case RewardSettings():
            pairs, rejects, prov = load_preference_pairs(resolve_path(cfg.data))
            result = train_reward(settings, pairs, prov, out_dir)
        case DPOSettings():
            pairs, rejects, prov = load_preference_pairs(resolve_path(cfg.data))
            result, dropped = train_dpo(settings, pairs, prov, out_dir)
            rejects += dropped
        case SFTSettings():
            examples, rejects, prov = load_sft_data(resolve_path(cfg.data))
            result = train_sft(settings, examples, prov, out_dir)
        case OnlineDPOSettings():
            engines = EngineCache(open_call_cache(cfg))
            result = train_online_dpo(
                settings,
                _prompts(cfg),
                _policy_engine(cfg),
                build(cfg.generator.sampling, "generator.sampling"),
                _judge(cfg, engines),
                load_constitution(resolve_path(cfg.constitution.path)),
                out_dir,
                seed=cfg.seed,
                fresh_reward_fn=_fresh_reward(cfg, engines),
            )
        case RLSettings():
            if settings.reward == "reward_model":
                if not settings.reward_model:
                    raise InputError(
                        "reward=reward_model needs a path", field="trainer.reward_model"
                    )
                reward_fn: Any = RewardModelScorer(resolve_path(settings.reward_model))
            else:
                reward_fn = _pointwise_reward(cfg, EngineCache(open_call_cache(cfg)))
            prompts = _prompts(cfg)
            prov = Provenance(str(resolve_path(cfg.prompts.path)), len(prompts), [], [], [])
            result = train_rl(settings, prompts, reward_fn, prov, out_dir)
        case _:
            result = _train_ppo(cfg, settings, out_dir)
    _report(out_dir, type(settings).__name__, result, rejects)


def _train_ppo(cfg: DictConfig, settings: Any, out_dir: Path) -> TrainResult:
    """``trainer=ppo``: charter's own PPO, on the reward model or the pointwise judge."""
    from charter.trainers.ppo import PPOConfig, train_ppo
    from charter.trainers.ppo_curves import curves_summary

    if not isinstance(settings, PPOConfig):
        raise InputError(f"unknown trainer {type(settings).__name__}", field="trainer")
    engines = EngineCache(open_call_cache(cfg))
    judge_reward = _pointwise_reward(cfg, engines)
    if cfg.get("reward_model"):  # learned reward; the judge watches for over-optimisation
        reward_fn: Any = RewardModelScorer(resolve_path(cfg.reward_model))
        fresh: Any = judge_reward
    else:
        reward_fn, fresh = judge_reward, None
    prompts = [p.messages for p in _prompts(cfg)]
    ppo = train_ppo(
        cfg.generator.engine.model, None, reward_fn, prompts, settings, out_dir,
        fresh_reward_fn=fresh,
    )  # fmt: skip
    return TrainResult(
        model_dir=ppo.model_dir,
        losses=[s.policy_loss for s in ppo.steps],
        metrics={
            "stopped": ppo.stopped,
            "steps": len(ppo.steps),
            "reward_mean_per_step": [round(s.reward_mean, 4) for s in ppo.steps],
            "kl_per_step": [round(s.kl, 4) for s in ppo.steps],
            "fresh_reward_per_step": [
                None if s.fresh_reward_mean is None else round(s.fresh_reward_mean, 4)
                for s in ppo.steps
            ],
            **curves_summary([asdict(c) for c in ppo.curves]),  # per step: curves.jsonl/.png
            "warnings": ppo.warnings,
        },
    )


def run_loop(cfg: DictConfig, out_dir: Path) -> None:
    """The closed loop: pairs -> reward model -> DPO -> trained vs base on held-out prompts.

    Steps one to three are the pipeline's own stage commands on the training prompts (the last
    ``loop.heldout_prompts`` are kept out), so the loop's data is an ordinary run directory.
    """
    loop: LoopSettings = build(cfg.loop, "loop")
    prompts = _prompts(cfg)
    if len(prompts) <= loop.heldout_prompts:
        raise InputError(
            f"{len(prompts)} prompts; need more than loop.heldout_prompts={loop.heldout_prompts}",
            field="prompts",
        )
    train_prompts, heldout = prompts[: -loop.heldout_prompts], prompts[-loop.heldout_prompts :]
    data_dir = out_dir / "data"
    prompt_file = data_dir / "train_prompts.jsonl"
    write_jsonl_atomic(
        prompt_file, [{"id": p.prompt_id, "messages": p.messages} for p in train_prompts]
    )
    data_cfg = OmegaConf.merge(
        cfg, {"prompts": {"path": str(prompt_file), "limit": None, "fields": {"id": "id"}}}
    )
    engines = EngineCache(open_call_cache(cfg))
    console.print(f"[bold]loop[/] 1/4 pairs from {len(train_prompts)} prompts -> {data_dir}")
    for stage in (run_generate, run_judge, run_pairs):
        stage(data_cfg, data_dir, engines)  # type: ignore[arg-type]
    pairs, _, prov = load_preference_pairs(data_dir)

    console.print(f"[bold]loop[/] 2/4 reward model on {len(pairs)} pairs")
    rm = train_reward(loop.reward, pairs, prov, out_dir / "reward")
    console.print("[bold]loop[/] 3/4 DPO")
    dpo, _ = train_dpo(loop.dpo, pairs, prov, out_dir / "dpo")

    console.print(f"[bold]loop[/] 4/4 trained vs base on {len(heldout)} held-out prompts")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    judge = _judge(cfg, engines)
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    base = engines.get(cfg.generator.engine, "generator.engine")
    trained_node = OmegaConf.merge(cfg.generator.engine, {"model": str(dpo.model_dir)})
    trained = engines.get(trained_node, "generator.engine")
    match = head_to_head(heldout, trained, base, sampling, judge, constitution, seed=cfg.seed)
    run_files.write_rows(out_dir, "head_to_head_candidates.jsonl", match.sets)
    run_files.write_rows(out_dir, "head_to_head_judgments.jsonl", match.judgments)
    scorer = RewardModelScorer(rm.model_dir)
    figures: dict[str, Any] = {
        "pairs": len(pairs),
        "reward_model": rm.metrics,
        "dpo": dpo.metrics,
        "dpo_vs_base": match.summary(),
        "reward_model_prefers_dpo": reward_model_preference(scorer, match.sets),
    }
    figures["labels"] = _label_facts(data_dir)
    if loop.evaluator is not None:
        figures["independent"] = _independent(loop, match, out_dir)
    if loop.ppo:
        figures["ppo"] = _loop_ppo(cfg, rm.model_dir, train_prompts, heldout, out_dir, engines)
    write_text_atomic(out_dir / "loop_metrics.json", json.dumps(figures, indent=2) + "\n")
    human = rm.metrics.get("human") or {}
    lo, hi = match.ci95
    summary_table(
        f"charter loop: {cfg.experiment_name}",
        {
            "training pairs": len(pairs),
            "reward model held-out accuracy": rm.metrics["heldout_accuracy"],
            "reward model accuracy on human pairs": human.get("accuracy"),
            "  (longer-response baseline)": human.get("longer_response_baseline"),
            "DPO loss first -> last": f"{dpo.metrics['first_loss']:.4f} -> "
            f"{dpo.metrics['last_loss']:.4f}",
            "DPO win rate vs base (judge)": f"{match.win_rate:.3f} [{lo:.3f}, {hi:.3f}] "
            f"on {match.prompts} prompts, mean p {match.mean_p_trained:.3f}",
            "reward model prefers DPO answer": figures["reward_model_prefers_dpo"],
            **_independent_rows(figures.get("independent")),
            "held-out answers identical to base": figures["dpo_vs_base"]["identical_answers"],
            **_ppo_rows(figures.get("ppo")),
            "output": str(out_dir),
        },
    )


def _label_facts(data_dir: Path) -> dict[str, Any]:
    """What the training labels were like: how many, how sure, how consistent across orders."""
    judge = run_state.read_summary(data_dir).get("judge") or {}
    margins = [float(r.get("margin") or 0.0) for _, r in read_jsonl(data_dir / run_files.PAIRS)]
    return {
        "comparisons": judge.get("comparisons"),
        "swap_consistency": judge.get("swap_consistency"),
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
    }


def _independent(loop: LoopSettings, match: Any, out_dir: Path) -> dict[str, Any]:
    """The referee that never saw the loop's labels: trained on people, then trained vs base."""
    from charter.trainers.independent_eval import train_referee

    assert loop.evaluator is not None
    console.print("[bold]loop[/] evaluator: a reward model on human pairs only")
    path = resolve_path(loop.evaluator.human_pairs)
    referee = train_referee(loop.evaluator, path, out_dir / "evaluator")
    return {
        "evaluator": f"reward model trained on {referee.train_pairs} human pairs of {path.name}",
        "agreement_with_people": referee.agreement.summary(),
        "longer_response_baseline": round(referee.longer_response_baseline, 4),
        "dpo_vs_base": referee.judge(match.sets).summary(),
    }


def _independent_rows(independent: dict[str, Any] | None) -> dict[str, Any]:
    if not independent:
        return {}

    def shown(v: dict[str, Any]) -> str:
        lo, hi = v["ci95"]
        return f"{v['rate']:.3f} [{lo:.3f}, {hi:.3f}] on {v['n']}, mean p {v['mean_p']:.3f}"

    return {
        "DPO win rate vs base (independent evaluator)": shown(independent["dpo_vs_base"]),
        "  evaluator's agreement with people (held out)": shown(
            independent["agreement_with_people"]
        ),
        "  (longer-response baseline there)": independent["longer_response_baseline"],
    }


def _ppo_rows(ppo: dict[str, Any] | None) -> dict[str, Any]:
    if not ppo:
        return {}
    vs = ppo["ppo_vs_base"]
    lo, hi = vs["ci95"]
    return {
        "PPO steps (stopped by)": f"{ppo['steps']} ({ppo['stopped']})",
        "PPO win rate vs base (judge)": f"{vs['win_rate']:.3f} [{lo:.3f}, {hi:.3f}] "
        f"on {vs['prompts']} prompts",
        "reward model prefers PPO answer": ppo["reward_model_prefers_ppo"],
        "PPO guard warnings": len(ppo["warnings"]),
        **_curve_rows(ppo.get("curves") or {}),
    }


def _curve_rows(curves: dict[str, Any]) -> dict[str, Any]:
    if not curves:
        return {}

    def arrow(key: str) -> str:
        return f"{curves[key + '_first']} -> {curves[key + '_last']}"

    return {
        "PPO reward model score (first -> last)": arrow("reward_mean"),
        "PPO fresh judge score (first -> last)": arrow("fresh_reward_mean"),
        "PPO KL to start, nats (first -> last)": arrow("kl_to_start"),
        "PPO guard's first warning at step": curves["guard_first_step"],
    }


def _loop_ppo(
    cfg: DictConfig,
    reward_model: Path,
    train_prompts: list[Any],
    heldout: list[Any],
    out_dir: Path,
    engines: EngineCache,
) -> dict[str, Any]:
    """The PPO leg of the loop: PPO on the reward model, then the same head-to-head."""
    from charter.trainers.ppo import PPOConfig, train_ppo
    from charter.trainers.ppo_curves import curves_summary

    settings = build(cfg.loop_ppo, "loop_ppo") if cfg.get("loop_ppo") else PPOConfig()
    ppo = train_ppo(
        cfg.generator.engine.model,
        None,
        RewardModelScorer(reward_model),
        [p.messages for p in train_prompts],
        settings,
        out_dir / "ppo",
        fresh_reward_fn=_fresh_reward(cfg, engines),
    )
    trained = engines.get(
        OmegaConf.merge(cfg.generator.engine, {"model": str(ppo.model_dir)}), "generator.engine"
    )
    match = head_to_head(
        heldout,
        trained,
        engines.get(cfg.generator.engine, "generator.engine"),
        build(cfg.generator.sampling, "generator.sampling"),
        _judge(cfg, engines),
        load_constitution(resolve_path(cfg.constitution.path)),
        seed=cfg.seed,
    )
    return {
        "stopped": ppo.stopped,
        "steps": len(ppo.steps),
        "warnings": ppo.warnings,
        "curves": curves_summary([asdict(c) for c in ppo.curves]),  # ppo/curves.jsonl, .png
        "ppo_vs_base": match.summary(),
        "reward_model_prefers_ppo": reward_model_preference(
            RewardModelScorer(reward_model), match.sets
        ),
    }
