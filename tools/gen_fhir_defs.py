#!/usr/bin/env python3
"""Generate phip's embedded FHIR R4 definitions from the official 4.0.1 definition files.

Usage: tools/gen_fhir_defs.py [SOURCE_DIR] [OUT_DIR]

SOURCE_DIR (default /work/shared/data/fhir-r4) holds the official downloads:
profiles-types.json, profiles-resources.json, search-parameters.json and
compartmentdefinition-patient.json. OUT_DIR (default crates/fhir/defs next to this script's
repository) receives three gzip-compressed compact JSON files:

- types.json.gz: every primitive, complex datatype, resource type and backbone element
  (as a pseudo-type named by its path, e.g. ``Patient.contact``), with their elements;
- search-parameters.json.gz: all SearchParameters, compacted;
- compartment-patient.json.gz: resource type -> search parameter codes placing it in the
  Patient compartment.

The output is deterministic (sorted keys, gzip mtime 0) so re-running it on the same input
produces byte-identical files. Standard library only.
"""

import gzip
import json
import os
import sys

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


def load_bundle(path):
    with open(path, encoding="utf-8") as f:
        bundle = json.load(f)
    return [entry["resource"] for entry in bundle.get("entry", [])]


def write_gz(path, data):
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8")
    # mtime=0 and no file name keep the output byte-stable across runs.
    with open(path, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
            gz.write(raw)
    return len(raw)


def type_code(sd_kind, element_name, t):
    """The type code of one ElementDefinition.type entry.

    System types (``http://hl7.org/fhirpath/System.String``) appear on the `id` of elements,
    `Extension.url`, `Resource.id` and the `value` of primitives. Outside primitives we use the
    FHIR type the structuredefinition-fhir-type extension names (``string``, ``id``, ``uri``);
    a primitive's own `value` keeps the System type (``System.String``), since it *is* the
    underlying FHIRPath value.
    """
    code = t["code"]
    if not code.startswith(SYSTEM_PREFIX):
        return code
    system = code[len(SYSTEM_PREFIX):]
    if sd_kind == "primitive-type" and element_name == "value":
        return system
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return ext["valueUrl"]
    return {"System.String": "string", "System.Boolean": "boolean"}.get(system, system)


def ref_targets(types):
    targets = []
    for t in types:
        for profile in t.get("targetProfile", []):
            name = profile[len(SD_PREFIX):] if profile.startswith(SD_PREFIX) else profile
            if name not in targets:
                targets.append(name)
    return targets


def convert_sd(sd, out):
    """Adds the type of a StructureDefinition, and its backbone pseudo-types, to `out`."""
    name = sd["id"]
    kind = sd["kind"]
    elements = sd["snapshot"]["element"]
    root_path = elements[0]["path"]  # `Quantity` for SimpleQuantity
    base = sd.get("baseDefinition")
    base = base[len(SD_PREFIX):] if base and base.startswith(SD_PREFIX) else base
    info = {"kind": kind, "abstract": bool(sd.get("abstract"))}
    if base:
        info["base"] = base
    if sd.get("derivation") == "constraint":
        info["constraint"] = True
    # Pseudo-types keyed by their path relative to the real type name (so SimpleQuantity's
    # children, if it had any, would be `SimpleQuantity.x`).
    owners = {root_path: info}
    info["elements"] = []
    for el in elements[1:]:
        if "sliceName" in el:
            continue
        path = el["path"]
        parent, _, last = path.rpartition(".")
        owner = owners.get(parent)
        if owner is None:
            raise SystemExit(f"{name}: element {path} has no owner")
        is_choice = last.endswith("[x]")
        if is_choice:
            last = last[:-3]
        rec = {"n": last, "min": el["min"]}
        rec["max"] = "*" if el["max"] == "*" else int(el["max"])
        if is_choice:
            rec["ch"] = 1
        if el.get("isSummary"):
            rec["s"] = 1
        if el.get("isModifier"):
            rec["m"] = 1
        pseudo_name = name + path[len(root_path):]
        if "contentReference" in el:
            ref = el["contentReference"]
            if not ref.startswith("#"):
                raise SystemExit(f"{path}: unexpected contentReference {ref}")
            target = ref[1:]
            # `#Questionnaire.item` is relative to the root path; map it to our naming.
            if target.split(".")[0] == root_path:
                target = name + target[len(root_path):]
            rec["t"] = [target]
        else:
            types = el.get("type", [])
            codes = [type_code(kind, last, t) for t in types]
            if codes in (["BackboneElement"], ["Element"]) and not is_choice:
                # A backbone element: a pseudo-type named by its path, whose children follow.
                child = {"kind": "backbone", "abstract": False, "base": codes[0], "elements": []}
                owners[path] = child
                out[pseudo_name] = child
                codes = [pseudo_name]
            if kind == "resource" and parent == root_path and last == "id":
                # The 4.0.1 snapshots type Resource.id as System.String/`string`, but the
                # specification (and its regex) make it an `id`.
                codes = ["id"]
            rec["t"] = codes
            targets = ref_targets(types)
            if targets:
                rec["r"] = targets
            if kind == "primitive-type" and last == "value":
                for t in types:
                    for ext in t.get("extension", []):
                        if ext.get("url") == REGEX_EXT:
                            info["regex"] = ext["valueString"]
                info["valueType"] = codes[0]
        owners[parent]["elements"].append(rec)
    out[name] = info


def gen_types(src):
    out = {}
    for fname in ("profiles-types.json", "profiles-resources.json"):
        for res in load_bundle(os.path.join(src, fname)):
            if res.get("resourceType") != "StructureDefinition":
                continue
            if res.get("kind") == "logical":
                continue
            if not str(res.get("fhirVersion", "4.0.1")).startswith("4.0"):
                # The 4.0.1 download also carries a draft SubscriptionStatus from 4.3.0
                # (R4B); it is no R4 resource type.
                continue
            convert_sd(res, out)
    # Backbone pseudo-types whose element list a contentReference points at must exist.
    for tname, info in out.items():
        for el in info["elements"]:
            for t in el["t"]:
                if "." in t and not t.startswith("System.") and t not in out:
                    raise SystemExit(f"{tname}.{el['n']}: unresolved type {t}")
    return {"fhirVersion": "4.0.1", "types": out}


def gen_search_params(src):
    params = []
    for sp in load_bundle(os.path.join(src, "search-parameters.json")):
        rec = {"code": sp["code"], "url": sp["url"], "base": sp["base"], "type": sp["type"]}
        if sp.get("expression"):
            rec["expression"] = sp["expression"]
        if sp.get("target"):
            rec["target"] = sp["target"]
        if sp.get("component"):
            rec["component"] = [
                {"definition": c["definition"], "expression": c["expression"]}
                for c in sp["component"]
            ]
        for key in ("multipleOr", "multipleAnd", "modifier", "comparator"):
            if key in sp:
                rec[key] = sp[key]
        params.append(rec)
    params.sort(key=lambda p: p["url"])
    return {"fhirVersion": "4.0.1", "parameters": params}


def gen_compartment(src):
    with open(os.path.join(src, "compartmentdefinition-patient.json"), encoding="utf-8") as f:
        comp = json.load(f)
    out = {}
    for res in comp["resource"]:
        params = list(res.get("param", []))
        if res["code"] == "Patient":
            # A Patient is in its own compartment by its id; `{def}` stands for that.
            params.insert(0, "{def}")
        if params:
            out[res["code"]] = params
    return {"compartment": "Patient", "resources": out}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/fhir-r4"
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "crates", "fhir", "defs")
    os.makedirs(dst, exist_ok=True)
    types = gen_types(src)
    n = write_gz(os.path.join(dst, "types.json.gz"), types)
    print(f"types.json.gz: {len(types['types'])} types, {n} bytes uncompressed")
    sps = gen_search_params(src)
    n = write_gz(os.path.join(dst, "search-parameters.json.gz"), sps)
    print(f"search-parameters.json.gz: {len(sps['parameters'])} parameters, {n} bytes uncompressed")
    comp = gen_compartment(src)
    n = write_gz(os.path.join(dst, "compartment-patient.json.gz"), comp)
    print(f"compartment-patient.json.gz: {len(comp['resources'])} resource types, {n} bytes")


if __name__ == "__main__":
    main()
