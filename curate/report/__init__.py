"""What a run shows people: the run report (report.md/json and plots), selection maps and
per-step summaries, ``curate compare``, duplicate-cluster views, a refresh's changelog."""
