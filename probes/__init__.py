"""Hallucination-risk probes on a model's own prefill hidden states.

Modules (import what you need; nothing here runs at import):
    features     FeatureSpec (layer(s) x kind), FeatureSet (per-run safetensors shards + index)
    labels       verifier / JSONL labels with finish reasons; truncated answers counted, excluded
    split        grouped, seeded train / validation / test split
    metrics      AUROC (+ bootstrap CI), AUPRC, ECE, AURC, accuracy at coverage, paired
                 bootstrap of any per-item statistic: pure numpy
    calibration  Platt / isotonic on validation, applied with numpy; refine's risk thresholds;
                 the probe gate's cut-off on dev (an accuracy floor, or a coverage to match)
    fit          logistic regression / MLP (scikit-learn); validation-only candidate table
    artifact     Probe = weights.safetensors + card.json; load_probe refuses stale fingerprints
    runtime      RiskScorer: numpy-only scoring, a `risk_fn` for `Engine.generate`
    baselines    post-generation risks: mean logprob, mean entropy, self-consistency
    data         ProbeData: greedy answers, labels, features; collect, self-consistency
    sweep        layer x feature sweep chosen on validation, measured on held-out rows
    evaluation   a saved probe vs the baselines on its test split; scoring prompts
    plots        sweep and ROC figures
    vlm          vision-language model features (visual, vision tokens, query token)
"""
