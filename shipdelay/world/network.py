"""The static world: real hubs, the lanes between their cities, carriers and customers.

Itineraries are built per lane and service level from templates such as
truck -> port -> ocean -> port -> (customs) -> truck, with planned durations from great-circle
distances and mode speeds. Everything here is fixed by the seed before any shipment moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from shipdelay.contract import MODES

MODE_INDEX = {m: i for i, m in enumerate(MODES)}
TRUCK, RAIL, AIR, OCEAN = (MODE_INDEX[m] for m in ("truck", "rail", "air", "ocean"))

# Planned speed (km/h over the great-circle distance, detours included) and fixed hours per leg.
SPEED_KMH = np.array([48.0, 30.0, 650.0, 24.0])
FIXED_HOURS = np.array([2.0, 10.0, 3.0, 12.0])
# Planned dwell at a hub before the next leg departs, by the kind of hub.
DWELL_HOURS = {"depot": 6.0, "airport": 14.0, "seaport": 60.0, "rail": 20.0}
# Scheduled services leave on a timetable: a shipment that misses one waits for the next.
SERVICE_INTERVAL_HOURS = np.array([0.0, 48.0, 24.0, 168.0])

# The EU customs union: no customs between its members.
EU = {"AT", "BE", "BG", "CZ", "DE", "DK", "ES", "FI", "FR", "GR", "HU", "IE", "IT", "NL", "PL",
      "PT", "RO", "SE", "SK", "SI", "HR", "LU", "LT", "LV", "EE", "CY", "MT"}

REGION_EXPORT_WEIGHT = {
    "east_asia": 5.0, "southeast_asia": 2.5, "south_asia": 1.5, "middle_east": 1.0,
    "europe": 3.0, "north_america": 2.5, "latin_america": 1.0, "africa": 0.6, "oceania": 0.6,
}


def load_hubs() -> pd.DataFrame:
    """The hub catalogue shipped with the package (real hubs, coordinates, countries, regions)."""
    with resources.files("shipdelay.world").joinpath("hubs.csv").open() as f:
        hubs = pd.read_csv(f)
    return hubs.sort_values("hub_id").reset_index(drop=True)


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


@dataclass(frozen=True)
class Itinerary:
    """A lane's planned route for one service level: hubs visited and the mode of each leg."""

    hubs: tuple[int, ...]  # hub indices, len = legs + 1
    modes: tuple[int, ...]
    customs_at: int  # index into hubs where customs is cleared, -1 for domestic


@dataclass
class Network:
    hubs: pd.DataFrame
    city_hubs: dict[str, dict[str, int]]  # city -> kind -> hub index
    cities: list[str]
    city_region: dict[str, str]
    city_country: dict[str, str]
    carriers: pd.DataFrame  # carrier_id, mode, slip_hours, speed_factor, failure_rate
    customers: pd.DataFrame  # customer_id, home_city, weight, express_share, economy_share
    lanes: pd.DataFrame  # origin_city, destination_city, weight
    itineraries: dict[tuple[str, str, str], list[Itinerary]]  # (origin, dest, level) -> options

    @property
    def hub_ids(self) -> np.ndarray:
        return self.hubs["hub_id"].to_numpy()


def _route_options(net_city_hubs, o: str, d: str, level: str, same_region: bool, km: float,
                   border: bool, transship: dict[str, int]) -> list[Itinerary]:
    """Candidate itineraries between two cities for one service level."""
    oh, dh = net_city_hubs[o], net_city_hubs[d]
    options: list[Itinerary] = []
    customs = 1 if border else -1

    def via(kind: str, mode: int, extra: tuple[int, ...] = ()) -> Itinerary:
        hubs = (oh["depot"], oh[kind], *extra, dh[kind], dh["depot"])
        modes = (TRUCK, mode, *([mode] * len(extra)), TRUCK)
        return Itinerary(hubs, modes, len(hubs) - 2 if border else -1)

    if same_region and km < 1800 and level != "express":
        options.append(Itinerary((oh["depot"], dh["depot"]), (TRUCK,), customs))
        if "rail" in oh and "rail" in dh and km > 400:
            options.append(via("rail", RAIL))
    if same_region and km < 1800 and level == "express":
        options.append(Itinerary((oh["depot"], dh["depot"]), (TRUCK,), customs))
    if not same_region or km >= 1800:
        if level != "economy" or not ("seaport" in oh and "seaport" in dh):
            options.append(via("airport", AIR))
        if level != "express" and "seaport" in oh and "seaport" in dh:
            options.append(via("seaport", OCEAN))
            for hub in transship.values():
                if hub not in (oh["seaport"], dh["seaport"]):
                    options.append(via("seaport", OCEAN, (hub,)))
                    break
        if level != "express" and "rail" in oh and "rail" in dh and km < 12000:
            options.append(via("rail", RAIL))
        if level != "express" and same_region and km < 4500:
            options.append(Itinerary((oh["depot"], dh["depot"]), (TRUCK,), customs))
    return options


def build_network(seed: int, n_customers: int = 400) -> Network:
    """The lanes, carriers and customers of a world, fixed by `seed`."""
    rng = np.random.default_rng([seed, 1])
    hubs = load_hubs()
    city_hubs: dict[str, dict[str, int]] = {}
    for idx, row in hubs.iterrows():
        city_hubs.setdefault(row.city, {})[row.kind] = int(idx)
    cities = sorted(c for c, k in city_hubs.items() if "depot" in k and "airport" in k)
    first = hubs.groupby("city").first()
    city_region = first["region"].to_dict()
    city_country = first["country"].to_dict()
    transship = {c: city_hubs[c]["seaport"] for c in ("singapore", "dubai")
                 if c in city_hubs and "seaport" in city_hubs[c]}

    # Lanes: export weight of the origin region times attraction of the destination.
    coords = first.loc[cities, ["latitude", "longitude"]].to_numpy()
    o_idx, d_idx = np.meshgrid(np.arange(len(cities)), np.arange(len(cities)), indexing="ij")
    o_idx, d_idx = o_idx.ravel(), d_idx.ravel()
    keep = o_idx != d_idx
    o_idx, d_idx = o_idx[keep], d_idx[keep]
    km = great_circle_km(coords[o_idx, 0], coords[o_idx, 1], coords[d_idx, 0], coords[d_idx, 1])
    region = np.array([city_region[c] for c in cities])
    same = region[o_idx] == region[d_idx]
    weight = (np.array([REGION_EXPORT_WEIGHT.get(r, 1.0) for r in region[o_idx]])
              * np.where(same, 2.5, 1.0) * rng.lognormal(0, 0.8, len(o_idx)))
    lanes = pd.DataFrame({
        "origin_city": np.array(cities)[o_idx], "destination_city": np.array(cities)[d_idx],
        "km": km, "same_region": same, "weight": weight / weight.sum(),
    })

    itineraries: dict[tuple[str, str, str], list[Itinerary]] = {}
    for lane in lanes.itertuples():
        o_c, d_c = city_country[lane.origin_city], city_country[lane.destination_city]
        border = o_c != d_c and not (o_c in EU and d_c in EU)
        for level in ("economy", "standard", "express"):
            itineraries[(lane.origin_city, lane.destination_city, level)] = _route_options(
                city_hubs, lane.origin_city, lane.destination_city, level,
                bool(lane.same_region), float(lane.km), border, transship)

    # Carriers: several per mode with differing reliability (hidden from any model).
    rows = []
    for mode in MODES:
        for k in range(5 if mode in ("truck", "air") else 4):
            rows.append({
                "carrier_id": f"{mode[:3].upper()}-{k + 1:02d}",
                "mode": MODE_INDEX[mode],
                "slip_hours": float(rng.gamma(2.0, 1.5 if mode != "ocean" else 8.0)),
                "speed_factor": float(rng.uniform(0.98, 1.12)),
                "failure_rate": float(rng.uniform(0.005, 0.04)),
            })
    carriers = pd.DataFrame(rows)

    volume = rng.zipf(1.6, n_customers).clip(1, 500).astype(float)
    mix = rng.dirichlet([3.0, 5.0, 2.0], n_customers)
    customers = pd.DataFrame({
        "customer_id": [f"CU{k:05d}" for k in range(n_customers)],
        "home_city": rng.choice(cities, n_customers),
        "weight": volume / volume.sum(),
        "economy_share": mix[:, 0], "standard_share": mix[:, 1], "express_share": mix[:, 2],
    })
    return Network(hubs, city_hubs, cities, city_region, city_country, carriers, customers,
                   lanes, itineraries)
