"""The printed summary: LM runs on bits per token with perplexity as exp(mean log-loss), FWT
n/a with its reason, the stability-gap line, the cost of evaluation during training, and a
`wandb sync` hint only for an offline W&B run."""

from harness.experiment.console import format_summary, print_report

COST = {"wall_time_s": 20.0, "train_time_s": 10.0, "eval_time_s": 1.0, "peak_rss_mb": 900.0,
        "strategy_memory_bytes": 0, "parameters": 430_000}


def lm_results(**summary) -> dict:
    return {"metric": "perplexity", "summary_metric": "bits_per_token", "task": "lm",
            "fwt_note": "trained from scratch: because", "summary": {**COST, **summary},
            "task_names": ["a", "b"], "run_dir": "runs/x",
            "matrices": {"perplexity": [[5.0, 9.0], [7.0, 4.0]]}}


def test_language_model_summary_reads_bits_and_says_why_fwt_is_missing():
    text = format_summary(lm_results(**{
        "bits_per_token/avg": 2.5, "bits_per_token/bwt": 0.4, "bits_per_token/fwt": None,
        "bits_per_token/forgetting": 0.4, "perplexity/avg": 5.657, "accuracy/avg": 0.3,
        "accuracy/bwt": -0.1, "accuracy/fwt": None, "accuracy/forgetting": 0.1,
        "train_flops": 1.25e12}))
    lines = text.splitlines()
    assert lines[0].startswith("bits/token average 2.500 | backward transfer 0.400 | "
                               "forward transfer n/a | forgetting 0.400 | perplexity 5.657")
    assert lines[1].startswith("accuracy   average 0.300")
    assert "1.25e+12 training FLOPs" in text
    assert lines[-1] == "note: forward transfer n/a: trained from scratch: because"
    assert "evaluation during training" not in text and "stability" not in text


def test_stability_line_and_the_cost_of_evaluating_during_training():
    text = format_summary({"metric": "accuracy", "summary": {
        **COST, "accuracy/avg": 0.9, "accuracy/bwt": -0.1, "accuracy/fwt": None,
        "accuracy/forgetting": 0.1, "accuracy/worst": 0.25, "accuracy/wc": 0.375,
        "accuracy/gap_depth": 0.637, "accuracy/gap_depth_max": 1.0,
        "accuracy/gap_recovery_steps": 18.0, "accuracy/gap_dips": 10,
        "accuracy/gap_recovered_dips": 9, "curve_eval_time_s": 1.5}})
    assert ("stability  accuracy min-ACC 0.250 | WC-ACC 0.375 | dip 0.637 (deepest 1.000) | "
            "half regained in 18.0 steps (9 of 10 dips)") in text
    assert "evaluation during training 1.5 s (15% of the training time)" in text


def test_the_sync_hint_only_for_an_offline_wandb_run(capsys):
    results = lm_results(**{"bits_per_token/avg": 2.5, "perplexity/avg": 5.657})
    print_report({**results, "wandb_dir": "/r/wandb/offline-run-1", "wandb_mode": "offline"})
    assert "W&B run: /r/wandb/offline-run-1  (publish with: wandb sync /r/wandb/offline-run-1)" \
        in capsys.readouterr().out
    print_report({**results, "wandb_dir": "/r/wandb/run-1", "wandb_mode": "online"})
    out = capsys.readouterr().out
    assert "W&B run: /r/wandb/run-1\n" in out and "wandb sync" not in out


def test_the_cost_line_names_the_trained_parameters_only_when_fewer():
    adapter = format_summary(lm_results(**{"bits_per_token/avg": 2.5, "parameters": 135_000_000,
                                           "trained_parameters": 921_600}))
    assert "135.00 M parameters (0.92 M trained)" in adapter
    full = format_summary(lm_results(**{"bits_per_token/avg": 2.5,
                                        "trained_parameters": 430_000}))
    assert "0.43 M parameters\n" in full and "M trained" not in full
