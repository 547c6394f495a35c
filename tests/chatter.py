"""The start-up lines and logs of TensorFlow/absl/CUDA, Beam's workers and Ray that a normal
run keeps off the terminal (in the command's log file; `dfd --verbose` shows them)."""

CHATTER = ("failed call to cuInit", "oneDNN custom operations", "absl::InitializeLog",
           "cudart_stub.cc", "No semi_persistent_directory", "Discarding unparseable args",
           "apitools not found", "Token authentication is enabled", "streaming_executor",
           "logging_progress", "core_worker.cc")


def chatter_in(text: str) -> list[str]:
    """The lines of ``text`` that are such chatter."""
    return [line for line in text.splitlines() if any(c in line for c in CHATTER)]
