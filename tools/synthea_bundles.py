#!/usr/bin/env python3
"""Builds Synthea-shaped transaction bundles from the committed Synthea NDJSON sample.

Synthea's FHIR exporter (with `exporter.fhir.transaction_bundle = true`) writes, per run, the
way a hospital system sends its data:

- `hospitalInformation<timestamp>.json`: a batch of the Organizations and Locations, each
  `POST` with `ifNoneExist: identifier=<system>|<value>`;
- `practitionerInformation<timestamp>.json`: a batch of the Practitioners (`ifNoneExist` on
  their NPI) and PractitionerRoles;
- one transaction per patient, `<Given>_<Family>_<id>.json`: the Patient and its records, each
  `POST` with `fullUrl` `urn:uuid:<id>`, references between them as `urn:uuid:` placeholders,
  and the shared resources named by conditional references
  (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|…`,
  `Organization?identifier=https://github.com/synthetichealth/synthea|…`).

The NDJSON sample (fixtures/synthea-10-patients, a Synthea bulk export) already carries those
conditional references; this script turns it back into that bundle form for a few patients and
writes gzip files (deterministic: no timestamps inside) to fixtures/synthea-bundles/.

    python3 tools/synthea_bundles.py            # regenerate fixtures/synthea-bundles/
"""

import gzip
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "fixtures", "synthea-10-patients")
TARGET = os.path.join(ROOT, "fixtures", "synthea-bundles")

# Five of the thirteen patients (the smallest records, 501 resources between them; two have
# Devices, one AllergyIntolerances), so that loading them over HTTP stays quick in a debug test.
PATIENTS = [
    "63ee2253-bdd5-da55-2ad2-b4984d0ad700",
    "bb6a9034-2f23-2508-d29d-35efee156dc9",
    "3af3708d-41f1-cd80-f3dd-ec5ac76072bf",
    "cbc86e51-9eca-3855-76ec-c058f72c5761",
    "7bc002fa-dc52-17d6-1563-fd8901826f7d",
]
# A fixed "export time", as in Synthea's file names.
STAMP = "1722967917560"


def load():
    resources = []
    for name in sorted(os.listdir(SOURCE)):
        if name.endswith(".ndjson.gz"):
            with gzip.open(os.path.join(SOURCE, name), "rt", encoding="utf-8") as f:
                resources.extend(json.loads(line) for line in f if line.strip())
    return resources


def owner(resource):
    """The patient a record belongs to (its subject or patient), or None for shared ones."""
    if resource["resourceType"] == "Patient":
        return resource["id"]
    for key in ("subject", "patient"):
        reference = resource.get(key, {}).get("reference", "")
        if reference.startswith("Patient/"):
            return reference[len("Patient/"):]
    return None


def to_placeholders(value, ids):
    """Rewrites literal references to resources of the same bundle as urn:uuid: placeholders."""
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            if key == "reference" and isinstance(child, str) and child in ids:
                out[key] = "urn:uuid:" + ids[child]
            else:
                out[key] = to_placeholders(child, ids)
        return out
    if isinstance(value, list):
        return [to_placeholders(item, ids) for item in value]
    return value


def entry(resource, if_none_exist=None):
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": "urn:uuid:" + resource["id"], "resource": resource, "request": request}


def identifier_condition(resource, system):
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == system:
            return f"identifier={system}|{identifier['value']}"
    raise SystemExit(f"{resource['resourceType']}/{resource['id']} has no {system} identifier")


def write(name, bundle):
    path = os.path.join(TARGET, name + ".gz")
    data = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as raw:
        # mtime=0 and no file name in the header: the same input gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(data)
    return path


def main():
    resources = load()
    by_type = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    os.makedirs(TARGET, exist_ok=True)
    for name in os.listdir(TARGET):
        if name.endswith(".json.gz"):
            os.remove(os.path.join(TARGET, name))

    synthea = "https://github.com/synthetichealth/synthea"
    npi = "http://hl7.org/fhir/sid/us-npi"
    hospitals = [entry(r, identifier_condition(r, synthea)) for r in by_type["Organization"]]
    hospitals += [entry(r, identifier_condition(r, synthea)) for r in by_type["Location"]]
    write(f"hospitalInformation{STAMP}.json",
          {"resourceType": "Bundle", "type": "batch", "entry": hospitals})
    practitioners = [entry(r, identifier_condition(r, npi)) for r in by_type["Practitioner"]]
    practitioners += [entry(r) for r in by_type["PractitionerRole"]]
    write(f"practitionerInformation{STAMP}.json",
          {"resourceType": "Bundle", "type": "batch", "entry": practitioners})

    total = len(hospitals) + len(practitioners)
    for patient_id in PATIENTS:
        records = [r for r in resources if owner(r) == patient_id]
        records.sort(key=lambda r: (r["resourceType"] != "Patient", r["resourceType"], r["id"]))
        patient = records[0]
        assert patient["resourceType"] == "Patient", patient_id
        ids = {f"{r['resourceType']}/{r['id']}": r["id"] for r in records}
        entries = [entry(to_placeholders(r, ids)) for r in records]
        name = patient["name"][0]
        file_name = f"{name['given'][0]}_{name['family']}_{patient_id}.json"
        write(file_name, {"resourceType": "Bundle", "type": "transaction", "entry": entries})
        total += len(entries)
    print(f"{TARGET}: {2 + len(PATIENTS)} bundles, {total} resources", file=sys.stderr)


if __name__ == "__main__":
    main()
