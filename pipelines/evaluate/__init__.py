"""The evaluation job: attackers and probes on anonymized outputs, and its report."""
