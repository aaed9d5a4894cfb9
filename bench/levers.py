#!/usr/bin/env python3
"""The attention-pool lever: mistral.rs computes CPU attention in a private
rayon pool, sized by RAYON_NUM_THREADS and never pinned. This runs the bare
engine (`kinko bench-engine`, the engine exactly as kinko drives it, no
HTTP) in several variants side by side, alternating generations:

  default      rayon's default size (one thread per core), unpinned
  pinned       the same threads pinned from outside, one per core
               (sched_setaffinity through `taskset -p`)
  size=N       RAYON_NUM_THREADS=N
  threads=N    N compute threads (`--threads N`) instead of --threads

and prints time to first token and decode speed (median of --runs after a
warm-up) per model. The attention threads are found under /proc/PID/task:
they carry no name of their own (they inherit the engine thread's), so they
are the threads that are neither kinko's compute threads nor the engine
thread and that worked during a generation.

    levers.py --models smollm2:135m,smollm2-shape:360m [--runs 5] [--variants default,pinned,size=1,size=4]

The models come from the benchmark's own store (~/.cache/kinko/bench-home),
which scripts/bench.sh fills (the default model and the larger shapes).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sections import Worker  # noqa: E402
from stream_timing import PROMPT  # noqa: E402


def threads_of(pid):
    """tid -> (name, cpu ticks, allowed CPUs) of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            name = open(f"{base}/comm").read().strip()
            stat = open(f"{base}/stat").read()
            fields = stat[stat.rfind(")") + 2:].split()
            ticks = int(fields[11]) + int(fields[12])
            allowed = next(line.split()[1] for line in open(f"{base}/status")
                           if line.startswith("Cpus_allowed_list"))
        except (OSError, StopIteration):
            continue
        out[int(tid)] = (name, ticks, allowed)
    return out


class Engine(Worker):
    """The bare engine (`kinko bench-engine`) with extra environment."""

    def __init__(self, kinko, model, max_tokens, threads, env_extra):
        super().__init__([kinko, "--threads", str(threads), "bench-engine", model, "--prompt", PROMPT,
                          "--max-tokens", str(max_tokens)], env=dict(os.environ, **env_extra))

    def attention_threads(self):
        """The threads that did work during one generation and are neither
        kinko's compute threads nor the engine thread (pinned to one core
        once it joined kinko's pool)."""
        before = threads_of(self.proc.pid)
        self.run()
        after = threads_of(self.proc.pid)
        cores = os.sched_getaffinity(0)
        found = []
        for tid, (name, ticks, allowed) in after.items():
            if name.startswith("kinko-") or tid == self.proc.pid:
                continue
            worked = ticks - before.get(tid, (name, 0, allowed))[1]
            single_core = "-" not in allowed and "," not in allowed and len(cores) > 1
            if worked > 0 and not single_core:
                found.append(tid)
        return found

    def pin(self, tids):
        cores = sorted(os.sched_getaffinity(0))
        for i, tid in enumerate(tids):
            subprocess.run(["taskset", "-p", "-c", str(cores[i % len(cores)]), str(tid)], check=True,
                           stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2:135m")
    ap.add_argument("--variants", default="default,pinned,size=1,size=4")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    kinko = os.environ["KINKO_BIN"]
    # The larger shapes live in the benchmark's own store (bench.py makes it).
    cache = os.environ.get("KINKO_CACHE", os.path.expanduser("~/.cache/kinko"))
    os.environ["KINKO_HOME"] = os.path.join(cache, "bench-home")
    results = {}
    for model in a.models.split(","):
        engines = {}
        try:
            for v in a.variants.split(","):
                env = {"RAYON_NUM_THREADS": v.split("=")[1]} if v.startswith("size=") else {}
                threads = int(v.split("=")[1]) if v.startswith("threads=") else a.threads
                engines[v] = Engine(kinko, model, a.max_tokens, threads, env)
            notes = {}
            for v, e in engines.items():
                e.run()  # warm-up: the attention pool starts on first use
                if v == "pinned":
                    tids = e.attention_threads()
                    e.pin(tids)
                    notes[v] = f"pinned threads {tids}"
            runs = {v: [] for v in engines}
            for _ in range(a.runs):
                for v, e in engines.items():  # alternate
                    runs[v].append(e.run())
        finally:
            for e in engines.values():
                e.stop()
        results[model] = {}
        print(f"\n{model}, {a.max_tokens} tokens, {a.threads} compute threads, median of {a.runs}, "
              f"{time.strftime('%Y-%m-%d')}\n\n| variant | first token (ms) | decode (tok/s) | decode [min–max] |\n"
              "|---|---|---|---|")
        for v, rs in runs.items():
            ttft = statistics.median(r["ttft_ms"] for r in rs)
            dec = [r["decode_tok_s"] for r in rs]
            results[model][v] = {"ttft_ms": ttft, "decode_tok_s": statistics.median(dec), "runs": rs}
            print(f"| {v} | {ttft:.0f} | {statistics.median(dec):.1f} | {min(dec):.1f}–{max(dec):.1f} |")
        for v, n in notes.items():
            print(f"({v}: {n})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
