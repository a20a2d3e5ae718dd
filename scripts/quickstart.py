"""The quick start's body: sample data, a word count job, the top words."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from cluster.job_spec import get_mapreduce_job_template
from cluster.sample_data import generate

p = argparse.ArgumentParser(description="Run a word count on sample data with the local executor.")
p.add_argument("--size-mb", type=float, default=20, help="size of the sample data (default 20)")
p.add_argument("--servers", type=int, default=2, help="worker processes (default 2)")
p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "cluster-quickstart"),
               help="where the sample data, the job and the output go")
a = p.parse_args()

data = os.path.join(a.dir, "words")
if not os.path.exists(os.path.join(data, "EXPECTED.json")):
    print(f"generating {a.size_mb} MB of sample text in {data}/input ...", flush=True)
    generate("words", data, size_mb=a.size_mb, files=8, gzip_every=4)

job = get_mapreduce_job_template()
job.update(job_name="quickstart_word_count", project_name="word_count", input_dirs=[os.path.join(data, "input")],
           map_function_name="word_count", combine_function_name="sum_counts", reduce_function_name="sum_counts")
job_file = os.path.join(a.dir, "word_count.json")
with open(job_file, "w") as fh:
    json.dump(job, fh, indent=2)
config = os.path.join(a.dir, "cluster.cfg")
with open(config, "w") as fh:
    fh.write(f"[CLUSTER]\ncompute_dir = {os.path.join(a.dir, 'compute')}\n"
             f"projects_dir = {os.path.abspath('projects')}\n")

bin_dir = os.path.dirname(sys.executable)
mapreduce = os.path.join(bin_dir, "mapreduce")
print(f"$ mapreduce run {job_file} --config {config} --local --servers {a.servers}", flush=True)
subprocess.run([mapreduce, "run", job_file, "--config", config, "--local", "--servers", str(a.servers)], check=True)
out = subprocess.run([mapreduce, "output", job["job_name"], "--config", config],
                     check=True, capture_output=True, text=True).stdout
counts = sorted((json.loads(line) for line in out.splitlines()), key=lambda kv: -kv[1])
expected = json.load(open(os.path.join(data, "EXPECTED.json")))["counts"]
print("\ntop words:")
for word, n in counts[:10]:
    print(f"  {word:<12} {n:>10,}")
ok = dict(counts) == expected
print(f"\n{len(counts):,} distinct words; matches the generator's exact counts: {ok}")
print(f"output files: {os.path.join(a.dir, 'compute', 'data', job['job_name'], 'reduce')}")
print(f"print them:   .venv/bin/mapreduce output {job['job_name']} --config {config}")
sys.exit(0 if ok else 1)
