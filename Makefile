# `make run`: set up from scratch and run the default experiment (config.yaml).
# `make test`: set up from scratch and run the test suite.
CORES ?= 2
VENV ?= .venv

.PHONY: setup run test lint bench screenshots figure docs clean

setup:
	bash tools/setup.sh

# Jobs run with the interpreter that runs snakemake (the venv's). The HTML report comes last.
run: setup
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --cores $(CORES) --report report.html

# Two pytest-xdist workers by default (one per core of a CI machine): the suite is mostly
# subprocesses (snakemake, jobs) that leave a core idle between them; 1.4x faster measured.
# The SLURM tests take a machine-wide lock (one controller on fixed ports: tests/test_slurm.py).
TEST_WORKERS ?= $(CORES)
test: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python -m pytest -q -n $(TEST_WORKERS)

lint: setup
	$(VENV)/bin/snakemake --lint

# Screenshots of every figure as the HTML report shows it (needs chromium: apt-get install chromium).
screenshots:
	$(VENV)/bin/python tools/report_screenshots.py report.html report_screenshots

# The README's figure, from the finished default run (after `make run`).
figure:
	$(VENV)/bin/python -m lth summary --figure docs/default_run.png --curves docs/learning_curves.png

# docs/configuration.md, the configuration reference, from the config schema (tests check it is current).
docs:
	$(VENV)/bin/python tools/config_docs.py

bench: setup
	$(VENV)/bin/python bench/speed.py

clean:
	rm -rf results logs .snakemake report.html report_screenshots
