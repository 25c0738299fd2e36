"""A simulated cloud for the ``example`` collector: accounts x regions x resources (instances, volumes,
buckets), some expired, some expiring later, some protected.

The resources are a pure function of ``CloudSpec`` (seed, sizes, creation time): each region draws
from its own ``random.Random``, so a region is generated on its own, streamed, in any order. The state
file ``example-cloud.json`` holds the spec and what was deleted since (a bitmap per account/region); it
is small even for a million resources and is replaced atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import base64
import json
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

STATE_FILE = "example-cloud.json"
VERSION = 1
OWNERS = ("alice", "bob", "carol", "dave")
INSTANCE_TYPES = {"ex.small": (1, 2), "ex.medium": (2, 8), "ex.large": (4, 16), "ex.xlarge": (16, 64)}
EXPIRED_DURATIONS = {"1h": timedelta(hours=1), "2h": timedelta(hours=2), "1d": timedelta(days=1)}
FUTURE_DURATIONS = {"30d": timedelta(days=30), "12w": timedelta(weeks=12), "1y": timedelta(days=365)}


@dataclass(frozen=True, slots=True)
class CloudSpec:
    seed: int
    accounts: int
    regions: int
    resources: int
    """Resources per region."""
    now: datetime
    """When the cloud was created: every ctime and expiry is relative to it."""

    def account_ids(self) -> list[str]:
        return [f"example-account-{a}" for a in range(self.accounts)]

    def region_ids(self) -> list[str]:
        return [f"example-region-{r}" for r in range(self.regions)]


@dataclass(frozen=True, slots=True)
class Resource:
    index: int
    """Position in its region's generation order."""
    kind: str
    id: str
    ctime: datetime
    tags: dict[str, str]
    fields: dict[str, Any]
    protected: bool = False
    attached_to: str | None = None
    """A volume's instance: the instance must be deleted first."""
    expires: datetime | None = None
    """What the tags say (the core computes the same from the tags); not sent."""


@dataclass(frozen=True, slots=True)
class _Lifecycle:
    ctime: datetime
    tags: dict[str, str]
    protected: bool
    expires: datetime | None


def generate_region(spec: CloudSpec, account: int, region: int) -> Iterator[Resource]:
    """The resources of one region, always the same for the same spec."""
    rng = random.Random(f"{spec.seed}:{account}:{region}")
    now = spec.now
    instances: list[Resource] = []
    for k in range(spec.resources):
        pick = rng.random()
        if pick < 0.4:
            instance = _instance(rng, k, _lifecycle(rng, now))
            instances.append(instance)
            yield instance
        elif pick < 0.8:
            yield _volume(rng, k, now, instances)
        else:
            life = _lifecycle(rng, now)
            fields = {"bucket_objects": rng.randrange(10_000)}
            yield Resource(
                k, "example_bucket", f"bucket-{k:07d}", life.ctime, life.tags, fields, life.protected,
                expires=life.expires,
            )  # fmt: skip


def _lifecycle(rng: random.Random, now: datetime) -> _Lifecycle:
    tags = {"owner": rng.choice(OWNERS)}
    pick = rng.random()
    if pick < 0.15:  # expired: an expiration duration that ended long ago
        ctime = now - timedelta(days=rng.randint(2, 30), minutes=rng.randrange(1440))
        duration = rng.choice(list(EXPIRED_DURATIONS))
        tags["expiration"] = duration
        expires: datetime | None = ctime + EXPIRED_DURATIONS[duration]
    elif pick < 0.2:  # expired: an expiry time in the past
        ctime = now - timedelta(days=rng.randint(10, 60))
        expires = now - timedelta(days=rng.randint(1, 5), minutes=rng.randrange(1440))
        tags["resoto:expires"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif pick < 0.3:  # expires later: a duration from a recent ctime
        ctime = now - timedelta(hours=rng.randint(1, 23))
        duration = rng.choice(list(FUTURE_DURATIONS))
        tags["expiration"] = duration
        expires = ctime + FUTURE_DURATIONS[duration]
    elif pick < 0.35:  # expires later: an expiry time in the future
        ctime = now - timedelta(days=rng.randint(0, 30))
        expires = now + timedelta(days=rng.randint(30, 365))
        tags["resoto:expires"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        ctime = now - timedelta(days=rng.randint(0, 400), minutes=rng.randrange(1440))
        expires = None
    protected = expires is not None and expires < now and rng.random() < 0.25
    if protected:
        tags["resoto:protected"] = "true"
    return _Lifecycle(ctime, tags, protected, expires)


def _instance(rng: random.Random, k: int, life: _Lifecycle) -> Resource:
    instance_type = rng.choice(list(INSTANCE_TYPES))
    cores, memory = INSTANCE_TYPES[instance_type]
    fields = {
        "instance_cores": cores,
        "instance_memory": memory,
        "instance_type": instance_type,
        "instance_status": rng.choice(("running", "running", "stopped")),
    }
    return Resource(
        k, "example_instance", f"i-{k:07d}", life.ctime, life.tags, fields, life.protected, None, life.expires
    )


def _volume(rng: random.Random, k: int, now: datetime, instances: list[Resource]) -> Resource:
    size = rng.choice((8, 20, 100, 500))
    volume_type = rng.choice(("ssd", "hdd"))
    if instances and rng.random() < 0.5:  # attached: tags (and so expiry) propagate from the instance
        owner = rng.choice(instances)
        fields = {"volume_size": size, "volume_type": volume_type, "volume_status": "in-use"}
        return Resource(
            k, "example_volume", f"vol-{k:07d}", owner.ctime, dict(owner.tags), fields,
            owner.protected, owner.id, owner.expires,
        )  # fmt: skip
    life = _lifecycle(rng, now)
    fields = {"volume_size": size, "volume_type": volume_type, "volume_status": "available"}
    return Resource(
        k, "example_volume", f"vol-{k:07d}", life.ctime, life.tags, fields, life.protected, None, life.expires
    )


class ResourceNotFound(LookupError):
    """The resource does not exist (never did, or was deleted)."""


class ResourceGone(ResourceNotFound):
    """The resource existed and was deleted already."""


class ResourceInUse(RuntimeError):
    """The resource cannot be deleted yet: another one depends on it."""


@dataclass
class ExampleCloud:
    """The simulated cloud behind one state file. Deletions are kept per region as a bitmap over the
    generation order, so the file stays small (a bit per resource) however much is deleted."""

    path: Path
    spec: CloudSpec
    deleted: dict[str, bytearray] = field(default_factory=dict)
    """``account/region`` to a bitmap: bit k set when the k-th generated resource is deleted."""
    _index: dict[str, dict[str, Resource]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Path, spec: CloudSpec) -> ExampleCloud:
        """Load the cloud in `path`; create it from `spec` when the file does not exist."""
        try:
            return cls.load(path)
        except FileNotFoundError:
            cloud = cls(path, spec)
            cloud.save()
            return cloud

    @classmethod
    def load(cls, path: Path) -> ExampleCloud:
        """The cloud in `path`; raises FileNotFoundError when there is none."""
        state = json.loads(path.read_text())
        stored = CloudSpec(
            seed=state["seed"], accounts=state["accounts"], regions=state["regions"],
            resources=state["resources"], now=datetime.fromisoformat(state["created_at"]),
        )  # fmt: skip
        deleted = {key: bytearray(base64.b64decode(bits)) for key, bits in state["deleted"].items()}
        return cls(path, stored, deleted)

    def resources(self, account: str, region: str) -> Iterator[Resource]:
        """The resources that exist in one region, in generation order."""
        a, r = self._indices(account, region)
        gone = self.deleted.get(f"{account}/{region}", bytearray())
        return (res for res in generate_region(self.spec, a, r) if not _is_set(gone, res.index))

    def remove(self, account: str, region: str, resource_id: str) -> Resource:
        """Delete one resource in memory (see ``save``); raises ResourceNotFound, ResourceGone or ResourceInUse."""
        key = f"{account}/{region}"
        index = self.region_index(account, region)
        gone = self.deleted.setdefault(key, bytearray((self.spec.resources + 7) // 8))
        resource = index.get(resource_id)
        if resource is None:
            raise ResourceNotFound(f"{key}: no resource {resource_id!r}")
        if _is_set(gone, resource.index):
            raise ResourceGone(f"{key}: {resource_id} is deleted already")
        attached = index[resource.attached_to] if resource.attached_to is not None else None
        if attached is not None and not _is_set(gone, attached.index):
            raise ResourceInUse(f"{key}: {resource_id} is attached to {attached.id}")
        gone[resource.index // 8] |= 1 << (resource.index % 8)
        return resource

    def delete(self, account: str, region: str, resource_id: str) -> Resource:
        """Delete one resource and save at once."""
        resource = self.remove(account, region, resource_id)
        self.save()
        return resource

    def dump(self) -> str:
        """The state file's content."""
        state = {
            "version": VERSION,
            "seed": self.spec.seed,
            "accounts": self.spec.accounts,
            "regions": self.spec.regions,
            "resources": self.spec.resources,
            "created_at": self.spec.now.isoformat(),
            "deleted_count": sum(int.from_bytes(bits, "little").bit_count() for bits in self.deleted.values()),
            "deleted": {
                key: base64.b64encode(bits).decode() for key, bits in sorted(self.deleted.items()) if any(bits)
            },
        }
        return json.dumps(state, indent=1)

    def save(self) -> None:
        write_atomically(self.path, self.dump())

    def _indices(self, account: str, region: str) -> tuple[int, int]:
        a, r = _number(account, "example-account-"), _number(region, "example-region-")
        if not (0 <= a < self.spec.accounts and 0 <= r < self.spec.regions):
            raise ResourceNotFound(f"no region {account}/{region} in the example cloud")
        return a, r

    def indexed(self, account: str, region: str) -> bool:
        return f"{account}/{region}" in self._index

    def region_index(self, account: str, region: str) -> dict[str, Resource]:
        """Every resource generated in a region (deleted ones too) by id; built on first use."""
        key = f"{account}/{region}"
        if key not in self._index:
            a, r = self._indices(account, region)
            self._index[key] = {res.id: res for res in generate_region(self.spec, a, r)}
        return self._index[key]


def _is_set(bits: bytearray, index: int) -> bool:
    return index // 8 < len(bits) and bool(bits[index // 8] & (1 << (index % 8)))


def _number(name: str, prefix: str) -> int:
    digits = name.removeprefix(prefix)
    return int(digits) if name.startswith(prefix) and digits.isdigit() else -1


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old content or the new one, never a mix: write a temp file, sync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_spec(seed: int, accounts: int, regions: int, resources: int, now: datetime | None = None) -> CloudSpec:
    """A spec created now (seconds precision, UTC)."""
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    return CloudSpec(seed=seed, accounts=accounts, regions=regions, resources=resources, now=created)
