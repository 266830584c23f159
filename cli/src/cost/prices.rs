//! What AWS charges for each part of the chat, by region: on-demand list
//! prices, no free tier, no savings plans. Each can be overridden, and a
//! region missing here given whole, in chatctl.toml's `[prices]`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;

/// When the table below was read from AWS's pricing pages.
pub const AS_OF: &str = "2025-11";
/// The pages, one per service.
pub const SOURCES: [&str; 4] = [
    "https://aws.amazon.com/api-gateway/pricing/",
    "https://aws.amazon.com/lambda/pricing/",
    "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    "https://aws.amazon.com/cloudwatch/pricing/",
];

/// US dollars per unit of each thing the chat uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    /// API Gateway WebSocket: per million messages sent or received, metered
    /// in 32 KB increments (the first billion a month; $0.80 after).
    pub api_messages_per_million: f64,
    /// API Gateway WebSocket: per million connection minutes.
    pub api_connection_minutes_per_million: f64,
    pub lambda_requests_per_million: f64,
    /// Lambda duration on x86_64, per GB-second (the first 6 billion a month).
    pub lambda_gb_second_x86_64: f64,
    /// Lambda duration on arm64, per GB-second.
    pub lambda_gb_second_arm64: f64,
    /// DynamoDB on-demand, per million write request units.
    pub dynamodb_write_units_per_million: f64,
    /// DynamoDB on-demand, per million read request units.
    pub dynamodb_read_units_per_million: f64,
    /// CloudWatch Logs, per GB ingested (standard log class).
    pub logs_ingested_per_gb: f64,
}

/// The names `[prices]` takes, as the fields above.
pub const KEYS: [&str; 8] = [
    "api_messages_per_million",
    "api_connection_minutes_per_million",
    "lambda_requests_per_million",
    "lambda_gb_second_x86_64",
    "lambda_gb_second_arm64",
    "dynamodb_write_units_per_million",
    "dynamodb_read_units_per_million",
    "logs_ingested_per_gb",
];

impl Prices {
    fn field(&mut self, key: &str) -> Option<&mut f64> {
        Some(match key {
            "api_messages_per_million" => &mut self.api_messages_per_million,
            "api_connection_minutes_per_million" => &mut self.api_connection_minutes_per_million,
            "lambda_requests_per_million" => &mut self.lambda_requests_per_million,
            "lambda_gb_second_x86_64" => &mut self.lambda_gb_second_x86_64,
            "lambda_gb_second_arm64" => &mut self.lambda_gb_second_arm64,
            "dynamodb_write_units_per_million" => &mut self.dynamodb_write_units_per_million,
            "dynamodb_read_units_per_million" => &mut self.dynamodb_read_units_per_million,
            "logs_ingested_per_gb" => &mut self.logs_ingested_per_gb,
            _ => return None,
        })
    }
}

/// The published prices of a region, when the table has it. Only regions
/// read from the pages are here: a missing one is said, not guessed.
pub fn published(region: &str) -> Option<Prices> {
    match region {
        // US East (N. Virginia). DynamoDB's on-demand prices are those since
        // the cut of 2024-11-01.
        "us-east-1" => Some(Prices {
            api_messages_per_million: 1.00,
            api_connection_minutes_per_million: 0.25,
            lambda_requests_per_million: 0.20,
            lambda_gb_second_x86_64: 0.000_016_666_7,
            lambda_gb_second_arm64: 0.000_013_333_4,
            dynamodb_write_units_per_million: 0.625,
            dynamodb_read_units_per_million: 0.125,
            logs_ingested_per_gb: 0.50,
        }),
        _ => None,
    }
}

/// Where the prices in use come from.
#[derive(Debug, Clone, Serialize)]
pub struct PriceSource {
    pub region: String,
    /// "published AS_OF" or "chatctl.toml [prices]", or both.
    pub from: String,
    pub overridden: Vec<String>,
}

/// The region's published prices with `[prices]` over them; for a region
/// not in the table, `[prices]` must give every one.
pub fn for_region(region: &str, overrides: &BTreeMap<String, f64>) -> Result<(Prices, PriceSource)> {
    check(overrides)?;
    let (mut prices, from) = match published(region) {
        Some(prices) => (prices, format!("AWS's published prices for {region} ({AS_OF})")),
        None => {
            let missing: Vec<&str> = KEYS.into_iter().filter(|k| !overrides.contains_key(*k)).collect();
            if !missing.is_empty() {
                bail!(
                    "chatctl has no prices for region {region} (only us-east-1, read from AWS's pricing pages); \
                     give them in chatctl.toml under [prices]: {} (US dollars; see {})",
                    missing.join(", "),
                    SOURCES.join(" ")
                );
            }
            (
                published("us-east-1").expect("us-east-1 is in the table"),
                format!("chatctl.toml [prices] for {region}"),
            )
        }
    };
    for (key, value) in overrides {
        if let Some(field) = prices.field(key) {
            *field = *value;
        }
    }
    Ok((
        prices,
        PriceSource {
            region: region.to_string(),
            from,
            overridden: overrides.keys().cloned().collect(),
        },
    ))
}

/// `[prices]`: known names, prices of 0 or more.
pub fn check(overrides: &BTreeMap<String, f64>) -> Result<()> {
    for (key, value) in overrides {
        if !KEYS.contains(&key.as_str()) {
            bail!("[prices] has no {key:?}; the prices are {}", KEYS.join(", "));
        }
        if !(value.is_finite() && *value >= 0.0) {
            bail!("[prices] {key} must be a price in US dollars, 0 or more, not {value}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_published_prices() {
        let overrides = BTreeMap::from([("api_messages_per_million".to_string(), 0.8)]);
        let (prices, source) = for_region("us-east-1", &overrides).unwrap();
        assert_eq!(prices.api_messages_per_million, 0.8);
        assert_eq!(prices.api_connection_minutes_per_million, 0.25);
        assert_eq!(source.overridden, ["api_messages_per_million"]);
    }

    #[test]
    fn a_region_not_in_the_table_is_said_not_guessed() {
        let error = for_region("eu-west-3", &BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("no prices for region eu-west-3"), "{error}");
        assert!(error.contains("api_messages_per_million"), "{error}");
        let all: BTreeMap<String, f64> = KEYS.iter().map(|k| (k.to_string(), 1.0)).collect();
        let (prices, source) = for_region("eu-west-3", &all).unwrap();
        assert_eq!(prices.logs_ingested_per_gb, 1.0);
        assert!(source.from.contains("[prices]"));
    }

    #[test]
    fn unknown_or_negative_prices_are_refused() {
        let typo = BTreeMap::from([("api_message_per_million".to_string(), 1.0)]);
        assert!(
            check(&typo)
                .unwrap_err()
                .to_string()
                .contains("no \"api_message_per_million\"")
        );
        let negative = BTreeMap::from([("logs_ingested_per_gb".to_string(), -1.0)]);
        assert!(check(&negative).unwrap_err().to_string().contains("0 or more"));
    }
}
