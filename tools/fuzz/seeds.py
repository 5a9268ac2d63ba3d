#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/fuzz_targets) from committed data.

Usage: seeds.py OUT_DIR — creates OUT_DIR/<target>/ with one file per seed:
  fhir_resource  Synthea resources (fixtures/synthea-10-patients) and official R4 examples
  hl7v2          the HL7 v2 sample messages (fixtures/hl7v2/samples.tar.gz)
  fhirpath       the FHIRPath expression of every R4 search parameter (crates/fhir/defs)
  search_params  a query per R4 search parameter, with typed values, prefixes, modifiers,
                 chains and escapes
  jwt            JWT-shaped strings (an RFC 7515 example, cut and altered variants)
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def write(out, target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def fhir_resources(out):
    synthea = os.path.join(ROOT, "fixtures", "synthea-10-patients")
    for name in sorted(os.listdir(synthea)):
        if name.endswith(".ndjson.gz"):
            with gzip.open(os.path.join(synthea, name), "rt", encoding="utf-8") as f:
                for n, line in enumerate(f):
                    if n >= 20:
                        break
                    write(out, "fhir_resource", line.strip())
    examples = os.path.join(ROOT, "fixtures", "hl7.fhir.r4.examples-4.0.1.tgz")
    with tarfile.open(examples) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".json")]
        # Every 12th example, small ones only: a spread of resource types, quick to load.
        for member in members[::12]:
            if member.size <= 64 * 1024:
                write(out, "fhir_resource", tar.extractfile(member).read())


def hl7v2_messages(out):
    with tarfile.open(os.path.join(ROOT, "fixtures", "hl7v2", "samples.tar.gz")) as tar:
        for member in tar.getmembers():
            if member.isfile():
                write(out, "hl7v2", tar.extractfile(member).read())


SAMPLE_VALUES = {
    "date": ["2024-03-15", "ge2024-01", "lt2024-03-15T08:00:00+08:00", "ap2020", "sa2019-12-31T23:59:59Z"],
    "number": ["5", "gt10.50", "le-3", "ne0.001", "1e2"],
    "quantity": ["5.4|http://unitsofmeasure.org|mg", "gt100||mmol/L", "le7.0", "ap120|http://unitsofmeasure.org|mm[Hg]"],
    "token": ["http://loinc.org|8867-4", "urn:oid:2.16.156.10011.1.1|11010519491231002X", "|final", "male", "http://snomed.info/sct|"],
    "string": ["张", "Zhang Wei", "o\\,brien", "a\\|b\\$c"],
    "reference": ["Patient/123", "http://example.org/fhir/Patient/9/_history/2", "Organization/org-1", "abc"],
    "uri": ["http://hl7.org/fhir/ValueSet/example", "urn:uuid:8f1f1b2e-0000-4000-8000-000000000000"],
    "composite": ["http://loinc.org|8480-6$gt120", "a$b", "8867-4$lt60"],
    "special": ["42.0|-71.0|10|km"],
}
MODIFIERS = {
    "string": ["", ":exact", ":contains", ":missing"],
    "token": ["", ":not", ":text", ":of-type", ":in", ":missing"],
    "reference": ["", ":Patient", ":identifier", ":missing"],
    "uri": ["", ":below", ":above"],
    "date": ["", ":missing"],
}
HANDWRITTEN = [
    "Patient?_id=1,2,3&_count=10&_sort=-_lastUpdated,family",
    "Observation?subject.name=张&code=http://loinc.org|718-7&_include=Observation:subject",
    "Patient?_has:Observation:patient:code=1234-5&_revinclude=Encounter:patient:iterate",
    "Encounter?subject:Patient.identifier=urn:oid:2.16.156.10011.1.1|11010519491231002X",
    "Observation?value-quantity=ap5.4|http://unitsofmeasure.org|mg&_summary=count",
    "?_type=Patient,Observation&_lastUpdated=gt2024-01-01&_elements=id,meta",
    "Patient?name:contains=wei&birthdate=eq1949-12&_total=accurate&_format=json",
    "Condition?code:in=http://example.org/ValueSet/x&onset-date=ge2020&_text=diabetes",
    "Patient?_filter=name eq 'x'&_content=a&_list=l1&_query=q",
    "Observation?combo-code-value-quantity=http://loinc.org|8480-6$gt120|http://unitsofmeasure.org|mm[Hg]",
]


def search_queries(out):
    with gzip.open(os.path.join(ROOT, "crates", "fhir", "defs", "search-parameters.json.gz")) as f:
        params = json.load(f)["parameters"]
    expressions = set()
    for param in params:
        if param.get("expression"):
            expressions.add(param["expression"])
        values = SAMPLE_VALUES.get(param.get("type"), ["x"])
        modifiers = MODIFIERS.get(param.get("type"), [""])
        for base in param.get("base", [])[:3]:
            for n, value in enumerate(values[:3]):
                modifier = modifiers[n % len(modifiers)]
                if modifier == ":missing":
                    value = "true"
                write(out, "search_params", f"{base}?{param['code']}{modifier}={value}")
    for query in HANDWRITTEN:
        write(out, "search_params", query)
    for expression in sorted(expressions):
        write(out, "fhirpath", expression)


def jwts(out):
    # RFC 7515 appendix A.3 (ES256), then cut, re-headed and padded variants.
    example = (
        "eyJhbGciOiJFUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    )
    header, payload, signature = example.split(".")
    seeds = [
        example,
        f"{header}.{payload}.",
        f"{header}..{signature}",
        "eyJhbGciOiJub25lIn0." + payload + ".",
        "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0." + payload + "." + signature,
        "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwiY3JpdCI6WyJiNjQiXSwiYjY0IjpmYWxzZX0." + payload + "." + signature,
        "eyJhbGciOiJTTTIiLCJraWQiOiJrMSJ9." + payload + "." + signature,
        example + "=",
        example.replace("-", "+").replace("_", "/"),
    ]
    for seed in seeds:
        write(out, "jwt", seed)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    fhir_resources(out)
    hl7v2_messages(out)
    search_queries(out)
    jwts(out)
    for target in sorted(os.listdir(out)):
        print(f"{target}: {len(os.listdir(os.path.join(out, target)))} seeds")


if __name__ == "__main__":
    main()
