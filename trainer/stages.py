"""The chain of training stages behind a model: stage weights and their records.

The bundled model is a chain of warm starts (make_bundled_model.sh). Each stage's weights are
kept as trainer/weights/<name>.pt (fp16 tensors plus the run's config and summary: ~15 MB for
EfficientNet-B1) and its record in trainer/weights/stages.json: stage name, weights, the stage it
started from, pool, generator, schedule. `dustspot export` writes the chain that ends at a run's
--init into the manifest (training.stages), so no manifest is edited by hand.

    python -m trainer.stages save RUN_OR_CHECKPOINT trainer/weights/NAME.pt [--stage v8 --note TEXT]

writes the fp16 weights and, with --stage, appends that stage's record.
"""
import argparse
import json
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
STAGES_FILE = os.path.join(WEIGHTS_DIR, "stages.json")


def read(path=STAGES_FILE):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _by_weights(records, weights):
    """The record of a weights file, matched by file name (a GPU run carries copies elsewhere)."""
    name = os.path.basename(weights)
    return next((r for r in records if os.path.basename(r["weights"]) == name), None)


def lineage(init, records=None):
    """The recorded stages that led to the weights file `init`, oldest first ([] for none)."""
    if not init:
        return []
    records = read() if records is None else records
    by_name = {r["stage"]: r for r in records}
    record = _by_weights(records, init)
    if record is None:
        return [{"stage": "init", "weights": init, "from": "not recorded in trainer/weights/stages.json"}]
    chain = []
    while record is not None and record not in chain:
        chain.append(record)
        record = by_name.get(record["from"])
    return chain[::-1]


def run_lineage(cfg, records=None):
    """The recorded stages behind a run's --init, oldest first; a pruned init (`dustspot prune`)
    adds its pruning step after the stages of the network it was pruned from."""
    pruned = cfg.get("pruned")
    if not pruned:
        return lineage(cfg.get("init"), records)
    chain = lineage(pruned["from"], records)
    return chain + [{"stage": "prune", "weights": cfg.get("init"),
                     "from": chain[-1]["stage"] if chain else pruned["from"],
                     **{k: pruned.get(k) for k in ("ratio", "round_to", "parameters")}}]


def describe_run(cfg, summary, stage="this model", records=None):
    """A stage record for a trained run, from its config and summary."""
    records = read() if records is None else records
    parent = _by_weights(records, cfg["init"]) if cfg.get("init") else None
    data = cfg.get("data", {})
    pool = f"{cfg.get('pool')} tiles, seed {cfg.get('seed')}"
    if data.get("generator_sha1"):
        pool += f", generator sha1 {data['generator_sha1'][:12]} (trainer/synth.py)"
    record = {"stage": stage,
              "from": parent["stage"] if parent else (cfg.get("init") or "scratch"),
              "pool": pool, "batch": cfg.get("batch"), "lr": cfg.get("lr"),
              "steps": summary.get("step"), "tiles": summary.get("tiles_seen"),
              "minutes": round(summary["minutes"], 2) if summary.get("minutes") is not None else None,
              "schedule_minutes": cfg.get("minutes"), "schedule_steps": cfg.get("steps"),
              "amp": "bf16" if cfg.get("amp") else "fp32",
              "teacher": cfg.get("teacher")}
    return {k: v for k, v in record.items() if v is not None}


def save_weights(source, out_path):
    """A run folder or checkpoint -> fp16 weights with its config and summary (no optimizer)."""
    import torch

    from . import export
    _, state, run = export.load_checkpoint(source)
    kept = {"model": {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()},
            "config": state["config"], "summary": export.load_summary(state, run)}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    torch.save(kept, out_path)
    return kept


def record(stage, weights, cfg, summary, note=None, path=STAGES_FILE):
    """Append (or replace) the record of `stage` in the stages file."""
    records = [r for r in read(path) if r["stage"] != stage]
    entry = {**describe_run(cfg, summary, stage, records), "weights": weights}
    if note:
        entry["note"] = note
    records.append(entry)
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="fp16 weights of a run (and its stage record)")
    save.add_argument("source", help="run folder or checkpoint")
    save.add_argument("out", help="weights file to write, e.g. trainer/weights/NAME.pt")
    save.add_argument("--stage", help="also record this stage in trainer/weights/stages.json")
    save.add_argument("--note", help="what changed in this stage (generator, loss, data)")
    save.add_argument("--stages-file", default=STAGES_FILE)
    args = ap.parse_args(argv)
    kept = save_weights(args.source, args.out)
    print(f"{args.out}: fp16 weights, step {kept['summary'].get('step')}")
    if args.stage:
        entry = record(args.stage, os.path.relpath(args.out), kept["config"], kept["summary"], args.note,
                       args.stages_file)
        print(f"stage {args.stage} recorded (from {entry['from']}) in {args.stages_file}")


if __name__ == "__main__":
    main()
