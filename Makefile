# Everyday verbs. Every target sets up what is missing first (scripts/setup.sh).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup run run-scaled chat train validate lint test test-integration evaluate bench bench-booking bench-scheduler bench-reminders bench-scale bench-flood faults chaos staff faq missed retrain rollback lock clean

setup:            ## create .venv (Python 3.10) with the pinned packages
	@$(ENV) scripts/setup.sh

run: setup        ## train if needed, start action server + Rasa server (REST)
	@$(ENV) scripts/run.sh

run-scaled: setup ## N Rasa + M action servers on PostgreSQL and Redis behind nginx
	@$(ENV) scripts/install_services.sh && \
	  if live="$$($$VENV/bin/python -m staff live-model)"; then export MODEL_PATH="$$live"; \
	  else scripts/train.sh; fi && \
	  exec $$VENV/bin/python -m scripts.run_scaled $(ARGS)

chat:             ## talk to the running assistant in the terminal
	@$(ENV) $$VENV/bin/python scripts/chat.py

train: setup      ## train only if data, domain or config changed
	@$(ENV) scripts/train.sh

validate: setup   ## rasa data validate, warnings are errors
	@$(ENV) $$VENV/bin/rasa data validate --fail-on-warnings --domain domain.yml --data data

lint: setup       ## ruff and mypy
	@$(ENV) $$VENV/bin/ruff check . && $$VENV/bin/ruff format --check . && \
	  $$VENV/bin/mypy

test: setup       ## everything CI runs: lint, validate, unit, training, stories, NLU
	@$(ENV) scripts/test.sh

evaluate: train   ## held-out NLU accuracy per topic
	@$(ENV) $$VENV/bin/python scripts/evaluate_nlu.py --model $$MODEL_PATH

bench: setup      ## benchmark: accuracy, latency, throughput, training, memory vs stock
	@$(ENV) $$VENV/bin/python benchmarks/bench.py

bench-booking: train  ## benchmark: whole booking conversations over REST, 1 and 10 at once
	@$(ENV) $$VENV/bin/python benchmarks/bench_booking.py

faults: train      ## fault drill: break each part, show what patients got (about 4 min)
	@$(ENV) $$VENV/bin/python scripts/faults.py

bench-scale: train  ## benchmark: embedded vs 1, 2, 4 Rasa servers behind nginx (ARGS=--quick)
	@$(ENV) scripts/install_services.sh && $$VENV/bin/python benchmarks/bench_scale.py $(ARGS)

bench-flood: train  ## benchmark: other patients' answer times while one sender floods, limits off/on
	@$(ENV) $$VENV/bin/python benchmarks/bench_flood.py $(ARGS)

chaos: train      ## fault drill of the scaled profile under load (about 4 min)
	@$(ENV) scripts/install_services.sh && $$VENV/bin/python -m scripts.chaos $(ARGS)

bench-scheduler: setup  ## benchmark: SQLite scheduler bookings/s under contention
	@$(ENV) $$VENV/bin/python benchmarks/bench_scheduler.py

bench-reminders: setup  ## benchmark: 1,000 reminders due in one hour, two job runners, each sent once
	@$(ENV) $$VENV/bin/python benchmarks/bench_reminders.py $(ARGS)

staff: setup      ## staff command, e.g. make staff ARGS="bookings --date 2026-12-01"
	@$(ENV) scripts/clinicbot $(ARGS)

faq: setup        ## FAQ: make faq ARGS="show dry_needling" (or scripts/clinicbot faq ...)
	@$(ENV) scripts/clinicbot faq $(ARGS)

missed: setup     ## messages the assistant missed: make missed ARGS="--since 7"
	@$(ENV) scripts/clinicbot missed $(ARGS)

retrain: setup    ## validate, train, check; ARGS=--publish makes it live
	@$(ENV) scripts/clinicbot retrain $(ARGS)

rollback: setup   ## make the previously published model live again
	@$(ENV) scripts/clinicbot rollback

lock:             ## re-pin requirements.lock from requirements.in (needs PyPI)
	@$(ENV) scripts/lock.sh

clean:
	rm -rf models results .rasa
