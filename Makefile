# Two commands do everything: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench study beat-random lam-study budget-study loop-check torchrun-check headroom lint \
	setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m rlmix.train_agent $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

# The README's headline study on real Fashion-MNIST (apt-get install dataset-fashion-mnist):
# R-Mix against the agent under the paper's reward and under val_grad_align (plain, with the
# counterfactual baseline, with an entropy bonus), 5 paired seeds, and the fixed baselines.
STUDY_ARGS ?= --policies vanilla,mixup,cutmix_plus,constant,rmix,agent --seeds 0 1 2 3 4 \
	--jobs 2 --agent grad_cosine:grad_cosine --agent val_grad_align:val_grad_align \
	--agent val_grad_align+diff:val_grad_align,agent.baseline=counterfactual \
	--agent val_grad_align+ent:val_grad_align,agent.ent_coef=0.01
study: $(STAMP)
	$(PY) -m rlmix.compare --config fashion_mnist_study --out runs/study $(STUDY_ARGS) $(ARGS)

# The 10-seed answer to "does a learned policy beat random top-k at the same labelled budget?":
# R-Mix and CutMix+ against agents on the two-sided teach reward (today's observation and
# partner-aware), on hardness, and val_grad_align with the difference baseline searched on 400
# images and transferred to all 500 (7653 s, about 2 h 10 min, at 2 jobs here; run it again to resume).
BEAT_ARGS ?= --policies rmix,cutmix_plus,agent --versus cutmix_plus \
	--seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2 --counterfactual-every 5 --set env.eval_fgsm=false \
	--agent teach:teach --agent teach+partner:teach,env.partner_first=true \
	--agent hardness:hardness \
	--agent val_grad_align+diff:val_grad_align,agent.baseline=counterfactual,transfer=true
beat-random: $(STAMP)
	$(PY) -m rlmix.compare --config fashion_mnist_study --out runs/beat_random $(BEAT_ARGS) $(ARGS)

# Per-image against batch lam (mix.lam_mode) for R-Mix and Mixup, 5 paired seeds: two studies
# and their paired difference (about 30 min at 2 jobs here; run it again to resume).
LAM_ARGS ?= --policies rmix,mixup --seeds 0 1 2 3 4 --jobs 2 --set env.eval_fgsm=false
lam-study: $(STAMP)
	$(PY) -m rlmix.compare --config fashion_mnist_study --out runs/lam_batch $(LAM_ARGS) $(ARGS)
	$(PY) -m rlmix.compare --config fashion_mnist_study --out runs/lam_elem $(LAM_ARGS) \
		--set mix.lam_mode=elem $(ARGS)
	$(PY) -m rlmix.paired runs/lam_batch runs/lam_elem --out runs/lam_paired

# Where does the win hold across labelled budgets? Fashion-MNIST at 25, 50, 100 and 250 images per
# class (data.split_seed 0), 5 paired seeds, every budget trained for the same 2000 SGD steps (the
# 400-epoch schedule at 50 per class; batch 100, so budget:epochs = 25:1000 50:400 100:200 250:80),
# then Δ to R-Mix and to the best fixed mixer per budget (sweep.md / sweep.png in runs/budget_sweep).
# Many hours at 2 jobs here; run it again to resume.
BUDGET_PLAN  ?= 25:1000 50:400 100:200 250:80
# BUDGET_MIXER: the best new fixed mixer on 5 seeds (saliencymix costs a fifth of its time)
BUDGET_MIXER ?= comixup
BUDGET_FIXED ?= vanilla,cutmix_plus,rmix,$(BUDGET_MIXER)
BUDGET_ARGS  ?= --policies $(BUDGET_FIXED),agent --agent teach+partner:teach,env.partner_first=true \
	--counterfactual-every 5 --set env.eval_fgsm=false --seeds 0 1 2 3 4 --jobs 2
budget = $(word 1,$(subst :, ,$(1)))
budget-study: $(STAMP)
	$(foreach p,$(BUDGET_PLAN),$(PY) -m rlmix.compare --config fashion_mnist_study \
		--out runs/budget_$(call budget,$(p)) --set data.train_per_class=$(call budget,$(p)) \
		--epochs $(word 2,$(subst :, ,$(p))) $(BUDGET_ARGS) $(ARGS) &&) true
	$(PY) -m rlmix.sweep $(foreach p,$(BUDGET_PLAN),runs/budget_$(call budget,$(p))) \
		--key data.train_per_class --best-of $(BUDGET_FIXED) --out runs/budget_sweep

# Every way a torchrun run ends (finished, stopped, interrupted, usage error, one rank failing),
# 30 rounds in a row: about 45 min on a 2-core CPU.
torchrun-check: $(STAMP)
	bash tests/torchrun_exit_paths.sh

# RL-Mix in your own loop: the README's plain loop with LearnedMix (partner-aware teach) and with
# R-Mix on the study config, 5 paired seeds (about 30 min at 2 jobs here; run it again to resume).
LOOP_ARGS ?= --seeds 0 1 2 3 4 --jobs 2 --set env.reward=teach --set env.partner_first=true \
	--set env.counterfactual_every=5 --set env.eval_fgsm=false
loop-check: $(STAMP)
	$(PY) -m rlmix.loop --config fashion_mnist_study --out runs/loop_check $(LOOP_ARGS) $(ARGS)

# The README's headroom table: how much any per-image policy could gain over random top-k on
# each reward, scored on the states of an R-Mix run of the same study (no PPO).
HEADROOM_ARGS ?= --reward val_grad_align --reward val_grad_dot --reward grad_cosine \
	--reward grad_cosine_mean --reward ema_agreement --reward teach --reward hardness \
	--reward probe_rank \
	--at 50 100 150 200 --images 5000
headroom: $(STAMP)
	$(PY) -m rlmix.headroom --config fashion_mnist_study --out runs/headroom $(HEADROOM_ARGS) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
