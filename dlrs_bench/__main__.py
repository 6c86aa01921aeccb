from dlrs_bench.cli import app

app()
