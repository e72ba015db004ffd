"""Studies, raters, assignments and votes: every operation is one database transaction.

Double-blind by construction: a rater is known only by a random token (stored as its sha256); the pairs it sees name
no model, its images are served under random per-assignment keys, its left/right sides come from a keyed hash, and no
rater operation returns another rater's votes, the model mapping or results.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .config import CRITERIA
from .db import Assignment, Image, Pair, Prompt, Rater, Study, StudyModel, Vote, utcnow
from .runs import load_eval_run, match_runs
from .stats import LABELS, cohen_kappa, consensus, fleiss_kappa, percent_agreement, win_tie_loss

__all__ = ["Conflict", "NotFound", "StudyError", "StudyStore", "hash_token"]

SIDES = {"left", "right", "tie"}


class StudyError(ValueError):
    """A request the study cannot honour; ``status`` is the HTTP status to answer with."""

    status = 422


class NotFound(StudyError):
    status = 404


class Conflict(StudyError):
    status = 409


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def _keyed(secret: str, *parts: object) -> bytes:
    return hmac.new(secret.encode(), "|".join(map(str, parts)).encode(), hashlib.sha256).digest()


class StudyStore:
    """The study operations on one database.

    Args:
        engine: from :func:`infinity_preference.db.make_engine`.
        ratings_per_pair: raters per pair of a new study before a disagreement asks for one more.
        assignment_ttl_s: an unanswered assignment older than this no longer holds the pair's place.
        bootstrap_samples: resamples per confidence interval.
    """

    def __init__(self, engine: Engine, *, ratings_per_pair: int = 2, assignment_ttl_s: float = 1800.0,
                 bootstrap_samples: int = 1000) -> None:  # fmt: skip
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.ratings_per_pair = ratings_per_pair
        self.assignment_ttl = dt.timedelta(seconds=assignment_ttl_s)
        self.bootstrap_samples = bootstrap_samples

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------------------------------------ operator

    def create_study(
        self, name: str, runs: Sequence[tuple[str | None, str]], *, benchmark: str | None = None
    ) -> dict[str, Any]:
        """A study over every model pair of every (prompt, sample) slot the runs share; runs are (label, path)."""
        if not name.strip():
            raise StudyError("a study needs a name")
        slots = match_runs([load_eval_run(path, benchmark=benchmark, label=label) for label, path in runs])
        with self._transaction() as s:
            study = Study(name=name.strip(), benchmark=slots.benchmark, global_seed=slots.seed,
                          secret=secrets.token_hex(32), ratings_per_pair=self.ratings_per_pair)  # fmt: skip
            s.add(study)
            s.flush()
            for position, run in enumerate(slots.runs):
                s.add(
                    StudyModel(study_id=study.id, position=position, label=run.label, run_dir=str(run.path.resolve()))
                )
            prompt_rows = {}
            for prompt_id, info in slots.prompts.items():
                prompt_rows[prompt_id] = row = Prompt(study_id=study.id, prompt_id=prompt_id, text=info.text,
                                                      category=info.category)  # fmt: skip
                s.add(row)
            s.flush()
            images: dict[tuple[int, str, int], Image] = {}
            for position, run in enumerate(slots.runs):
                for prompt_id, sample in slots.slots:
                    images[(position, prompt_id, sample)] = image = Image(
                        study_id=study.id, model_position=position, prompt_row=prompt_rows[prompt_id].id,
                        sample_index=sample, path=str(run.images[(prompt_id, sample)].resolve()))  # fmt: skip
                    s.add(image)
            s.flush()
            for prompt_id, sample in slots.slots:
                for a, b in itertools.combinations(range(len(slots.runs)), 2):
                    s.add(Pair(study_id=study.id, prompt_row=prompt_rows[prompt_id].id, sample_index=sample,
                               model_a=a, model_b=b, image_a=images[(a, prompt_id, sample)].id,
                               image_b=images[(b, prompt_id, sample)].id, needed=self.ratings_per_pair))  # fmt: skip
            study_id = study.id
        return self.study_summary(study_id)

    def _study(self, s: Session, study_id: int) -> Study:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"no study {study_id}")
        return study

    def list_studies(self) -> list[dict[str, Any]]:
        with self._transaction() as s:
            ids = s.scalars(select(Study.id).order_by(Study.id)).all()
        return [self.study_summary(i) for i in ids]

    def study_summary(self, study_id: int) -> dict[str, Any]:
        """Operator view: models, counts and progress (pairs decided, ratings, per-rater counts)."""
        with self._transaction() as s:
            study = self._study(s, study_id)
            models = s.scalars(
                select(StudyModel).where(StudyModel.study_id == study_id).order_by(StudyModel.position)
            ).all()
            pairs = s.execute(select(Pair.id, Pair.needed).where(Pair.study_id == study_id)).all()
            done = Counter(
                s.scalars(
                    select(Assignment.pair_id)
                    .join(Pair, Pair.id == Assignment.pair_id)
                    .where(Pair.study_id == study_id, Assignment.completed_at.is_not(None))
                ).all()
            )
            raters = s.execute(
                select(Rater.id, Rater.name, func.count(Assignment.completed_at))
                .outerjoin(Assignment, Assignment.rater_id == Rater.id)
                .where(Rater.study_id == study_id)
                .group_by(Rater.id, Rater.name)
                .order_by(Rater.id)
            ).all()
            votes = s.scalar(
                select(func.count(Vote.id)).join(Pair, Pair.id == Vote.pair_id).where(Pair.study_id == study_id)
            )
            complete = sum(done[pid] >= needed for pid, needed in pairs)
            return {
                "id": study.id, "name": study.name, "benchmark": study.benchmark, "seed": study.global_seed,
                "created_at": study.created_at.isoformat() + "Z", "ratings_per_pair": study.ratings_per_pair,
                "models": [{"position": m.position, "label": m.label, "run_dir": m.run_dir} for m in models],
                "progress": {
                    "pairs": len(pairs), "pairs_complete": complete, "ratings": sum(done.values()), "votes": votes,
                    "ratings_needed": sum(max(needed, done[pid]) for pid, needed in pairs),
                    "third_ratings_asked": sum(needed > study.ratings_per_pair for _, needed in pairs),
                },
                "raters": [{"id": rid, "name": name, "rated": count} for rid, name, count in raters],
            }  # fmt: skip

    def invite(self, study_id: int, names: Sequence[str]) -> list[dict[str, Any]]:
        """New raters with fresh random tokens (returned once; only their hashes are stored)."""
        if not names or any(not str(n).strip() for n in names):
            raise StudyError("give one or more non-empty rater names")
        out = []
        with self._transaction() as s:
            self._study(s, study_id)
            for name in names:
                token = secrets.token_urlsafe(24)
                rater = Rater(study_id=study_id, name=str(name).strip()[:200], token_hash=hash_token(token))
                s.add(rater)
                s.flush()
                out.append({"id": rater.id, "name": rater.name, "token": token, "link": f"/rate/{token}"})
        return out

    # --------------------------------------------------------------------------------------------------- raters

    def _rater(self, s: Session, token: str) -> Rater:
        rater = s.scalars(select(Rater).where(Rater.token_hash == hash_token(token))).first()
        if rater is None:
            raise NotFound("unknown rater link; ask the study's operator for yours")
        return rater

    def rater_view(self, token: str) -> dict[str, Any]:
        """What a rater may know about itself: its name, the criteria and how many pairs it has rated."""
        with self._transaction() as s:
            rater = self._rater(s, token)
            rated = s.scalar(select(func.count(Assignment.id)).where(Assignment.rater_id == rater.id,
                                                                     Assignment.completed_at.is_not(None)))  # fmt: skip
            return {"name": rater.name, "rated": rated, "criteria": list(CRITERIA)}

    def next_pair(self, token: str) -> dict[str, Any] | None:
        """The rater's open pair, else a new one (None when nothing is left for this rater).

        A new pair is one this rater has not seen that still needs raters; pairs already started come first (so pairs
        finish), then a random order keyed by the study's secret and the rater.
        """
        for _ in range(3):  # a concurrent request of the same rater may take the same pair first: look again
            try:
                with self._transaction() as s:
                    rater = self._rater(s, token)
                    open_one = s.scalars(select(Assignment).where(Assignment.rater_id == rater.id,
                                                                  Assignment.completed_at.is_(None))).first()  # fmt: skip
                    if open_one is not None:
                        return self._pair_view(s, open_one, token)
                    study = self._study(s, rater.study_id)
                    cutoff = utcnow() - self.assignment_ttl
                    pairs = s.execute(select(Pair.id, Pair.needed).where(Pair.study_id == study.id)).all()
                    held = s.execute(select(Assignment.pair_id, Assignment.rater_id, Assignment.completed_at,
                                            Assignment.assigned_at).join(Pair, Pair.id == Assignment.pair_id)
                                     .where(Pair.study_id == study.id)).all()  # fmt: skip
                    seen = {pair_id for pair_id, rater_id, _, _ in held if rater_id == rater.id}
                    active = Counter(pair_id for pair_id, _, completed, assigned in held
                                     if completed is not None or assigned >= cutoff)  # fmt: skip
                    candidates = [pid for pid, needed in pairs if pid not in seen and active[pid] < needed]
                    if not candidates:
                        return None
                    pair_id = min(candidates, key=lambda p: (-active[p], _keyed(study.secret, "order", rater.id, p)))
                    left_is_a = _keyed(study.secret, "side", rater.id, pair_id)[0] % 2 == 0
                    assignment = Assignment(key=secrets.token_urlsafe(16), pair_id=pair_id, rater_id=rater.id,
                                            left_is_a=left_is_a, left_key=secrets.token_urlsafe(16),
                                            right_key=secrets.token_urlsafe(16))  # fmt: skip
                    s.add(assignment)
                    s.flush()
                    return self._pair_view(s, assignment, token)
            except IntegrityError:
                continue
        raise Conflict("could not hand out a pair; try again")

    def _pair_view(self, s: Session, assignment: Assignment, token: str) -> dict[str, Any]:
        pair = s.get(Pair, assignment.pair_id)
        prompt = s.get(Prompt, pair.prompt_row)
        rated = s.scalar(select(func.count(Assignment.id)).where(Assignment.rater_id == assignment.rater_id,
                                                                 Assignment.completed_at.is_not(None)))  # fmt: skip
        return {"assignment": assignment.key, "prompt": prompt.text, "criteria": list(CRITERIA), "rated": rated,
                "left": f"/api/rater/{token}/image/{assignment.left_key}",
                "right": f"/api/rater/{token}/image/{assignment.right_key}"}  # fmt: skip

    def image_file(self, token: str, image_key: str) -> Path:
        """The file behind one of the rater's own image keys (404 for any other key)."""
        with self._transaction() as s:
            rater = self._rater(s, token)
            assignment = s.scalars(select(Assignment).where(
                Assignment.rater_id == rater.id, (Assignment.left_key == image_key) | (Assignment.right_key == image_key)
            )).first()  # fmt: skip
            if assignment is None:
                raise NotFound("no such image for this rater")
            pair = s.get(Pair, assignment.pair_id)
            is_left = assignment.left_key == image_key
            image_id = pair.image_a if is_left == assignment.left_is_a else pair.image_b
            path = Path(s.get(Image, image_id).path)
        if not path.is_file():
            raise NotFound("this image is gone from the server; tell the study's operator")
        return path

    def submit(self, token: str, assignment_key: str, client_id: str, choices: Mapping[str, str]) -> dict[str, Any]:
        """Record the rater's three judgements of one of its pairs, in one transaction.

        Idempotent: the same submission again (same ``client_id`` and choices) is answered "duplicate" and stores
        nothing; a different submission for an already rated pair is a 409 (votes are final).
        """
        if set(choices) != set(CRITERIA):
            raise StudyError(f"choices must give exactly the criteria {list(CRITERIA)}, got {sorted(choices)}")
        bad = {c: v for c, v in choices.items() if v not in SIDES}
        if bad:
            raise StudyError(f"each choice must be 'left', 'right' or 'tie', got {bad}")
        if not 8 <= len(client_id) <= 64 or not client_id.isascii():
            raise StudyError("client_id must be 8 to 64 ASCII characters (e.g. a random UUID)")
        try:
            with self._transaction() as s:
                rater = self._rater(s, token)
                assignment = s.scalars(select(Assignment).where(Assignment.key == assignment_key,
                                                                Assignment.rater_id == rater.id)).first()  # fmt: skip
                if assignment is None:
                    raise NotFound("no such pair for this rater")
                labels = {c: _to_model_order(v, assignment.left_is_a) for c, v in choices.items()}
                existing = self._same_or_conflict(s, assignment, client_id, labels)
                if existing is not None:
                    return existing
                for criterion, label in labels.items():
                    s.add(Vote(assignment_id=assignment.id, pair_id=assignment.pair_id, rater_id=rater.id,
                               criterion=criterion, choice=label, client_id=client_id))  # fmt: skip
                now = utcnow()
                assignment.completed_at = now
                assignment.seconds = (now - assignment.assigned_at).total_seconds()
                s.flush()
                self._update_needed(s, assignment.pair_id)
        except IntegrityError:  # the same vote committed concurrently (a retry racing its original)
            with self._transaction() as s:
                assignment = s.scalars(select(Assignment).where(Assignment.key == assignment_key)).one()
                labels = {c: _to_model_order(v, assignment.left_is_a) for c, v in choices.items()}
                existing = self._same_or_conflict(s, assignment, client_id, labels)
                if existing is None:
                    raise Conflict("the vote could not be recorded; send it again") from None
                return existing
        return {"status": "recorded"}

    def _same_or_conflict(self, s: Session, assignment: Assignment, client_id: str,
                          labels: Mapping[str, str]) -> dict[str, Any] | None:  # fmt: skip
        stored = s.scalars(select(Vote).where(Vote.pair_id == assignment.pair_id,
                                              Vote.rater_id == assignment.rater_id)).all()  # fmt: skip
        if not stored:
            return None
        if all(v.client_id == client_id for v in stored) and {v.criterion: v.choice for v in stored} == dict(labels):
            return {"status": "duplicate"}
        raise Conflict("this pair is already rated; votes are final")

    def _update_needed(self, s: Session, pair_id: int) -> None:
        """Ask for one more rater when the study's first ``ratings_per_pair`` ratings disagree on any criterion."""
        ratings = self._ratings(s, [pair_id])[pair_id]
        pair = s.get(Pair, pair_id)
        raters = s.get(Study, pair.study_id).ratings_per_pair
        first = ratings[:raters]
        if len(first) == raters and any(len({r[c] for r in first}) > 1 for c in CRITERIA):
            pair.needed = raters + 1

    def _ratings(
        self, s: Session, pair_ids: Sequence[int] | None, study_id: int | None = None
    ) -> dict[int, list[dict[str, str]]]:
        """Each pair's complete ratings ({criterion: label}) in the order they were committed."""
        query = select(Vote.pair_id, Vote.assignment_id, Vote.criterion, Vote.choice, Vote.id)
        if pair_ids is not None:
            query = query.where(Vote.pair_id.in_(pair_ids))
        else:
            query = query.join(Pair, Pair.id == Vote.pair_id).where(Pair.study_id == study_id)
        by_assignment: dict[tuple[int, int], dict[str, Any]] = {}
        for pair_id, assignment_id, criterion, choice, vote_id in s.execute(query).all():
            entry = by_assignment.setdefault((pair_id, assignment_id), {"order": vote_id, "labels": {}})
            entry["order"] = min(entry["order"], vote_id)
            entry["labels"][criterion] = choice
        out: dict[int, list[dict[str, str]]] = defaultdict(list)
        for (pair_id, _), entry in sorted(by_assignment.items(), key=lambda kv: kv[1]["order"]):
            out[pair_id].append(entry["labels"])
        return out

    # -------------------------------------------------------------------------------------------------- results

    def results(self, study_id: int, *, seed: int = 0) -> dict[str, Any]:
        """Win/tie/loss per criterion and model pair (consensus of each pair; bootstrap CIs over prompts), the same
        per prompt category, and rater agreement on the first ``ratings_per_pair`` ratings of each pair."""
        summary = self.study_summary(study_id)
        with self._transaction() as s:
            study = self._study(s, study_id)
            labels = {m["position"]: m["label"] for m in summary["models"]}
            pairs = s.execute(
                select(Pair.id, Pair.model_a, Pair.model_b, Prompt.prompt_id, Prompt.category)
                .join(Prompt, Prompt.id == Pair.prompt_row)
                .where(Pair.study_id == study_id)
            ).all()
            ratings = self._ratings(s, None, study_id)
            needed_raters = study.ratings_per_pair
        rows: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        agreement_items: dict[str, list[list[str]]] = defaultdict(list)
        for pair_id, model_a, model_b, prompt_id, category in pairs:
            rated = ratings.get(pair_id, [])
            for criterion in CRITERIA:
                sequence = [r[criterion] for r in rated]
                if len(sequence) >= needed_raters:
                    agreement_items[criterion].append(sequence[:needed_raters])
                verdict = consensus(sequence, needed_raters)
                if verdict is not None:
                    rows[(model_a, model_b)][criterion].append(
                        {"prompt_id": prompt_id, "category": category or "uncategorized", "outcome": verdict}
                    )
        comparisons = []
        for a, b in itertools.combinations(sorted(labels), 2):
            per_criterion = {}
            for criterion in CRITERIA:
                decided = rows[(a, b)][criterion]
                entry = win_tie_loss(decided, num_samples=self.bootstrap_samples, seed=seed)
                categories = sorted({r["category"] for r in decided})
                entry["categories"] = {cat: win_tie_loss([r for r in decided if r["category"] == cat], num_samples=0)
                                       for cat in categories}  # fmt: skip
                per_criterion[criterion] = entry
            comparisons.append({"model_a": labels[a], "model_b": labels[b], "criteria": per_criterion})
        agreement = {}
        for criterion in CRITERIA:
            items = agreement_items[criterion]
            firsts = [i[0] for i in items]
            seconds = [i[1] for i in items]
            agreement[criterion] = {
                "items": len(items),
                "percent_agreement": percent_agreement(firsts, seconds),
                "cohen_kappa": cohen_kappa(firsts, seconds),
                "fleiss_kappa": fleiss_kappa([[i.count(label) for label in LABELS] for i in items]),
            }
        return {
            "study": {k: summary[k] for k in ("id", "name", "benchmark", "seed", "ratings_per_pair")},
            "models": [labels[p] for p in sorted(labels)],
            "progress": summary["progress"],
            "comparisons": comparisons,
            "agreement": agreement,
            "bootstrap": {"samples": self.bootstrap_samples, "confidence": 0.95, "seed": seed, "unit": "prompt"},
        }


def _to_model_order(side: str, left_is_a: bool) -> str:
    if side == "tie":
        return "tie"
    return "a" if (side == "left") == left_is_a else "b"
