//! The indicators and their definitions. Every count is of distinct residents (or records,
//! where said) placed by the geography rule of `phip_surveillance::source`: the patient's
//! coded home address, else the holding institution's division.

/// Base of the indicators' `Measure` canonical URLs.
pub const MEASURE_BASE: &str = "https://phip.cn/fhir/Measure";

/// How a measure's score is formed from its numerator and denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// numerator / denominator, a fraction in [0, 1].
    Proportion,
    /// numerator / denominator × 100,000.
    PerHundredThousand,
}

/// One indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Id, last segment of the canonical URL.
    pub id: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// Numerator definition.
    pub numerator: &'static str,
    /// Denominator definition.
    pub denominator: &'static str,
    /// Score.
    pub scoring: Scoring,
    /// Whether a higher score is better (FHIR `improvementNotation`).
    pub higher_is_better: bool,
}

impl Measure {
    /// The canonical URL (`https://phip.cn/fhir/Measure/{id}`).
    pub fn url(&self) -> String {
        format!("{MEASURE_BASE}/{}", self.id)
    }

    /// The definition as a FHIR R4 `Measure` resource (status active, scoring proportion or
    /// ratio, the numerator and denominator definitions as population descriptions), so the
    /// canonical URL the MeasureReports cite resolves on the server.
    pub fn to_resource(&self) -> serde_json::Value {
        let scoring = match self.scoring {
            Scoring::Proportion => "proportion",
            Scoring::PerHundredThousand => "ratio",
        };
        let population = |code: &str, description: &str| {
            serde_json::json!({
                "code": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/measure-population",
                    "code": code,
                }]},
                "description": description,
                "criteria": {"language": "text/plain", "expression": description},
            })
        };
        serde_json::json!({
            "resourceType": "Measure",
            "url": self.url(),
            "name": self.id.replace('-', "_"),
            "title": format!("{} / {}", self.name_en, self.name_zh),
            "status": "active",
            "publisher": "phip",
            "description": format!("{}: {} / {}", self.name_en, self.numerator, self.denominator),
            "scoring": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/measure-scoring",
                "code": scoring,
            }]},
            "improvementNotation": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
                "code": if self.higher_is_better { "increase" } else { "decrease" },
            }]},
            "group": [{"population": [
                population("numerator", self.numerator),
                population("denominator", self.denominator),
            ]}],
        })
    }

    /// The measure with id `id`.
    pub fn by_id(id: &str) -> Option<&'static Measure> {
        MEASURES.iter().find(|m| m.id == id)
    }
}

/// The indicators phip computes.
pub const MEASURES: &[Measure] = &[
    Measure {
        id: "ehr-coverage",
        name_en: "EHR coverage",
        name_zh: "居民电子健康档案建档率",
        numerator: "Patients (not active=false) resident in the division",
        denominator: "Resident population (population Group of the division)",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "ehr-utilisation",
        name_en: "EHR utilisation",
        name_zh: "电子健康档案使用率",
        numerator: "Resident Patients with at least one Encounter starting in the period",
        denominator: "Patients resident in the division (the EHRs of the coverage numerator)",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "family-doctor-contract",
        name_en: "Family-doctor contract rate",
        name_zh: "家庭医生签约率",
        numerator: "Distinct resident Patients who are a subject of an executed Contract whose \
                    applies period overlaps the period",
        denominator: "Resident population (population Group of the division)",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "hypertension-control",
        name_en: "Hypertension control rate",
        name_zh: "高血压患者血压控制率",
        numerator: "Denominator patients whose latest blood pressure in the period (LOINC \
                    8480-6 / 8462-4, alone or as components of 85354-9) is below 140/90 mmHg",
        denominator: "Resident Patients with an active hypertension Condition (ICD-10 I10-I13, \
                      I15; SNOMED CT 38341003) and at least one blood pressure in the period",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "referral-completion",
        name_en: "Referral completion rate",
        name_zh: "双向转诊完成率",
        numerator: "Denominator Tasks with status completed",
        denominator: "Referral Tasks (code urn:phip:workflow|referral) authored in the period, \
                      not cancelled or entered-in-error",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "result-recognition",
        name_en: "Result recognition rate",
        name_zh: "检查检验结果互认率",
        numerator: "Denominator orders the clinician revoked (status revoked): the recognisable \
                    result was used instead of repeating the test",
        denominator: "ServiceRequests authored in the period that a recognisable result from \
                      any institution covered when they were placed (they carry the advisory \
                      urn:phip:workflow:recognizable-result), not entered-in-error",
        scoring: Scoring::Proportion,
        higher_is_better: true,
    },
    Measure {
        id: "notifiable-incidence",
        name_en: "Notifiable disease incidence per 100,000",
        name_zh: "法定传染病报告发病率（1/10万）",
        numerator: "Case reports of the configured notifiable diseases with onset in the period",
        denominator: "Resident population (population Group of the division)",
        scoring: Scoring::PerHundredThousand,
        higher_is_better: false,
    },
];
