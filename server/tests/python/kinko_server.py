"""Starts the real kinko binary on a free port over a temporary copy of the
default model's store, for the Python tests."""
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm:latest"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KinkoServer:
    def __init__(self):
        self.bin = os.environ["KINKO_BIN"]
        src_home = os.environ["KINKO_HOME"]
        gguf = os.path.join(src_home, "models", MODEL.replace(":", "-"), "model.gguf")
        if not os.path.exists(gguf):
            raise SystemExit(f"{gguf} is missing: run scripts/default-model.sh")
        self.home = tempfile.TemporaryDirectory(prefix="kinko-clients-")
        env = dict(os.environ, KINKO_HOME=self.home.name)
        subprocess.run([self.bin, "import", MODEL, gguf], env=env, check=True, capture_output=True)
        # The embedding model: its store directory is a sentence-transformers
        # directory, imported again into the temporary store.
        embed_dir = os.path.join(src_home, "models", EMBED_MODEL.replace(":", "-"))
        if not os.path.exists(os.path.join(embed_dir, "model.safetensors")):
            raise SystemExit(f"{embed_dir} is missing: run scripts/default-model.sh")
        subprocess.run([self.bin, "import", EMBED_MODEL, embed_dir], env=env, check=True, capture_output=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            # One model in memory at a time, so eviction is exercised.
            [self.bin, "serve", "--addr", f"127.0.0.1:{self.port}", "--max-loaded-models", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit("kinko did not start")
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.home.cleanup()




def module_fixture(module_globals):
    """setUpModule/tearDownModule for a test module: one server each."""
    def setUp():
        module_globals["SERVER"] = KinkoServer()

    def tearDown():
        module_globals["SERVER"].stop()
    return setUp, tearDown
