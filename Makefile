# `make run`: set up from scratch and run the default experiment (config.yaml).
# `make test`: set up from scratch and run the test suite.
CORES ?= 2
VENV ?= .venv

.PHONY: setup run test lint bench clean

setup:
	bash tools/setup.sh

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/snakemake --lint

bench: setup
	$(VENV)/bin/python bench/speed.py

clean:
	rm -rf results logs .snakemake report.html
