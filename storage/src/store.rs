//! Object-store clients built from the worker's environment, the operator's
//! policy and a request's options, with the guards every request passes.
//!
//! - **Credentials**: the variables the Azure and AWS SDKs read
//!   (`MicrosoftAzureBuilder::from_env`, `AmazonS3Builder::from_env`), then
//!   the request's options (Dask's `storage_options`, keys as `object_store`
//!   names them). With no credential at all a store is anonymous (public
//!   containers such as the NOAA open dataset): the cloud's instance metadata
//!   service is asked only when the operator allows it
//!   ([`StoragePolicy::instance_credentials`]).
//! - **Options a client may not set**: those that make the worker use its own
//!   identity or files (managed identity ids and endpoints, token files, the
//!   Azure CLI, container credentials, assumed roles). An operator sets them
//!   in the worker's environment.
//! - **Endpoints never reached**: link-local and cloud metadata addresses, as
//!   endpoints, authority hosts or proxies, checked on the final settings
//!   (environment and options); every HTTP client also refuses to follow
//!   redirects and resolves names through a resolver that drops those
//!   addresses, so a name that resolves to 169.254.169.254 is refused too.
//! - **Allowed prefixes**: an operator may restrict workers to listed URL
//!   prefixes ([`StoragePolicy::url_allow`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};

use crate::location::{check_ip, forbidden_endpoint, split_glob, Location, StorageError};

/// Options of Stratus itself, carried with the store's options and never
/// given to `object_store`.
pub const ALLOW_INCOMPLETE: &str = "stratus_allow_incomplete";

/// What an operator decides about object-store access on a worker.
#[derive(Debug, Clone)]
pub struct StoragePolicy {
    /// URL prefixes requests may read or write; empty allows every URL.
    pub url_allow: Vec<String>,
    /// Let a store with no configured credential ask the cloud's instance
    /// metadata service (managed identity, EC2 instance role) instead of
    /// going anonymous.
    pub instance_credentials: bool,
    /// Requests in flight per worker, over all stores.
    pub max_requests: usize,
    /// Attempts after the first on 5xx, timeouts and connection errors.
    pub retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Time for one request (a ranged GET of up to 8 MiB, a part upload).
    pub request_timeout: Duration,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        StoragePolicy {
            url_allow: Vec::new(),
            instance_credentials: false,
            max_requests: 32,
            retries: 5,
            retry_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl StoragePolicy {
    /// An error unless `location` lies under one of the allowed prefixes.
    pub fn check_allowed(&self, url: &str, location: &Location) -> Result<(), StorageError> {
        if self.url_allow.is_empty() || !location.is_remote() {
            return Ok(());
        }
        let allowed = self.url_allow.iter().any(|prefix| {
            Location::parse(prefix).is_ok_and(|allowed| under_prefix(location, &allowed))
        });
        if allowed {
            Ok(())
        } else {
            Err(StorageError::Url {
                url: url.to_string(),
                what: format!(
                    "not under a URL prefix this worker allows (url_allow: {})",
                    self.url_allow.join(", ")
                ),
            })
        }
    }
}

/// Whether `location`'s literal part lies under `allowed` (same account or
/// bucket, key under the allowed key at a `/` boundary).
fn under_prefix(location: &Location, allowed: &Location) -> bool {
    let key_under = |key: &str, prefix: &str| {
        let (literal, _) = split_glob(key);
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || literal == prefix
            || literal
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    match (location, allowed) {
        (
            Location::Azure {
                account,
                container,
                key,
            },
            Location::Azure {
                account: a2,
                container: c2,
                key: k2,
            },
        ) => container == c2 && (a2.is_none() || a2 == account) && key_under(key, k2),
        (
            Location::S3 { bucket, key },
            Location::S3 {
                bucket: b2,
                key: k2,
            },
        ) => bucket == b2 && key_under(key, k2),
        _ => false,
    }
}

/// Options as a request carries them, split into those for `object_store`
/// and Stratus' own.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    pub store: Vec<(String, String)>,
    /// Read a dataset whose Stratus write did not complete.
    pub allow_incomplete: bool,
}

impl RequestOptions {
    /// Split and check `options` (`KEY=VALUE` pairs from a client).
    pub fn parse(options: &[(String, String)]) -> Result<RequestOptions, StorageError> {
        let mut out = RequestOptions::default();
        for (key, value) in options {
            let key = key.trim().to_ascii_lowercase();
            if key == ALLOW_INCOMPLETE {
                out.allow_incomplete = parse_bool(value).ok_or_else(|| StorageError::Option {
                    key: key.clone(),
                    what: format!("'{value}' is not true or false"),
                })?;
            } else if key.starts_with("stratus_") {
                return Err(StorageError::Option {
                    key,
                    what: format!("unknown Stratus option (known: {ALLOW_INCOMPLETE})"),
                });
            } else {
                out.store.push((key, value.clone()));
            }
        }
        Ok(out)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Built stores, one per (place, options), reused across requests.
#[derive(Debug, Default)]
pub struct StoreCache {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// Stores kept before the cache is cleared (each holds a connection pool).
const MAX_STORES: usize = 256;

impl StoreCache {
    /// The store for a remote `location` under `options` (from a client),
    /// built once. `url` names the request in errors.
    pub fn store(
        &self,
        policy: &StoragePolicy,
        url: &str,
        location: &Location,
        options: &[(String, String)],
    ) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let mut sorted: Vec<&(String, String)> = options.iter().collect();
        sorted.sort();
        // One store (one HTTP client, one connection pool) per container or
        // bucket and options, whatever the object. The key holds secrets; it
        // never leaves this process's memory.
        let place = match location {
            Location::Azure {
                account, container, ..
            } => format!("az\u{0}{account:?}\u{0}{container}"),
            Location::S3 { bucket, .. } => format!("s3\u{0}{bucket}"),
            Location::Local(_) => String::new(),
        };
        let cache_key = format!("{place}\u{0}{sorted:?}");
        if let Some(store) = self.stores.lock().expect("store cache").get(&cache_key) {
            return Ok(store.clone());
        }
        let store: Arc<dyn ObjectStore> = match location {
            Location::Azure {
                account, container, ..
            } => Arc::new(build_azure(
                policy,
                url,
                account.as_deref(),
                container,
                options,
            )?),
            Location::S3 { bucket, .. } => Arc::new(build_s3(policy, url, bucket, options)?),
            Location::Local(_) => {
                return Err(StorageError::Url {
                    url: url.to_string(),
                    what: "internal: a local path has no object store".into(),
                })
            }
        };
        let mut stores = self.stores.lock().expect("store cache");
        if stores.len() >= MAX_STORES {
            stores.clear();
        }
        stores.insert(cache_key, store.clone());
        Ok(store)
    }
}

fn option_error(url: &str, key: &str, what: impl Into<String>) -> StorageError {
    StorageError::Url {
        url: url.to_string(),
        what: format!("storage option '{key}': {}", what.into()),
    }
}

fn retry(policy: &StoragePolicy) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: policy.retries,
        retry_timeout: policy.retry_timeout,
    }
}

/// A client option that would make the worker use its own identity or files.
fn workers_own_option(url: &str, key: &str) -> StorageError {
    option_error(
        url,
        key,
        "uses the worker's own identity or files; only the worker's environment may set it",
    )
}

/// The error of a store that could not be built, naming the URL.
fn build_failed(url: &str, e: &object_store::Error) -> StorageError {
    StorageError::Url {
        url: url.to_string(),
        what: crate::error::describe(e),
    }
}

/// A store's HTTP settings: the policy's timeouts, and plain HTTP only when
/// the store's settings (`allow_http`) say so.
fn client_options(policy: &StoragePolicy, allow_http: Option<String>) -> ClientOptions {
    let allow_http = allow_http.and_then(|v| parse_bool(&v)).unwrap_or(false);
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(policy.request_timeout)
        .with_connect_timeout(Duration::from_secs(5))
        .with_user_agent(
            format!("stratus/{}", env!("CARGO_PKG_VERSION"))
                .parse()
                .expect("a valid user agent"),
        )
}

fn azure_bool(b: &MicrosoftAzureBuilder, key: AzureConfigKey) -> bool {
    b.get_config_value(&key)
        .and_then(|v| parse_bool(&v))
        .unwrap_or(false)
}

fn build_azure(
    policy: &StoragePolicy,
    url: &str,
    account: Option<&str>,
    container: &str,
    options: &[(String, String)],
) -> Result<impl ObjectStore, StorageError> {
    let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
    if let Some(account) = account {
        b = b.with_account(account);
    }
    for (key, value) in options {
        let parsed = AzureConfigKey::from_str(key).map_err(|_| {
            option_error(url, key, "not an Azure Blob option (object_store's AzureConfigKey names them: account_name, account_key, sas_token, bearer_token, client_id, client_secret, tenant_id, endpoint, use_emulator, skip_signature, allow_http, ...)")
        })?;
        use AzureConfigKey as K;
        let workers_own = matches!(
            parsed,
            K::MsiEndpoint
                | K::ObjectId
                | K::MsiResourceId
                | K::FederatedTokenFile
                | K::UseAzureCli
                | K::FabricTokenServiceUrl
                | K::FabricWorkloadHost
                | K::FabricSessionToken
                | K::FabricClusterIdentifier
        );
        if workers_own {
            return Err(workers_own_option(url, key));
        }
        b = b.with_config(parsed, value);
    }
    use AzureConfigKey as K;
    let client_gave = |k: &str| options.iter().any(|(key, _)| key == k);
    let id_from_client = ["azure_storage_client_id", "azure_client_id", "client_id"]
        .iter()
        .any(|k| client_gave(k));
    if id_from_client && b.get_config_value(&K::ClientSecret).is_none() {
        return Err(option_error(
            url,
            "client_id",
            "needs client_secret and tenant_id with it (a client id alone would use the worker's managed identity)",
        ));
    }
    let emulator = azure_bool(&b, K::UseEmulator);
    if !emulator && b.get_config_value(&K::AccountName).is_none() {
        return Err(StorageError::Url {
            url: url.to_string(),
            what: "no storage account: write az://CONTAINER@ACCOUNT.blob.core.windows.net/PATH, set AZURE_STORAGE_ACCOUNT_NAME on the workers, or pass --storage-option account_name=ACCOUNT".into(),
        });
    }
    for key in [
        K::Endpoint,
        K::AuthorityHost,
        K::Client(ClientConfigKey::ProxyUrl),
    ] {
        if let Some(endpoint) = b.get_config_value(&key) {
            forbidden_endpoint(&endpoint)?;
        }
    }
    if emulator {
        if let Ok(endpoint) = std::env::var("AZURITE_BLOB_STORAGE_URL") {
            forbidden_endpoint(&endpoint)?;
        }
    }
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let configured = [
        K::AccessKey,
        K::SasKey,
        K::Token,
        K::ClientSecret,
        K::FederatedTokenFile,
        K::MsiEndpoint,
        K::ObjectId,
        K::MsiResourceId,
        K::ClientId,
        K::FabricSessionToken,
    ]
    .into_iter()
    .any(has)
        || azure_bool(&b, K::UseAzureCli)
        || azure_bool(&b, K::SkipSignature)
        || emulator;
    if !configured && !policy.instance_credentials {
        b = b.with_skip_signature(true);
    }
    let allow_http = b.get_config_value(&K::Client(ClientConfigKey::AllowHttp));
    b.with_client_options(client_options(policy, allow_http))
        .with_retry(retry(policy))
        .with_http_connector(GuardedConnector)
        .build()
        .map_err(|e| build_failed(url, &e))
}

fn build_s3(
    policy: &StoragePolicy,
    url: &str,
    bucket: &str,
    options: &[(String, String)],
) -> Result<impl ObjectStore, StorageError> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    use AmazonS3ConfigKey as K;
    for (key, value) in options {
        let parsed = AmazonS3ConfigKey::from_str(key).map_err(|_| {
            option_error(url, key, "not an S3 option (object_store's AmazonS3ConfigKey names them: access_key_id, secret_access_key, session_token, region, endpoint, skip_signature, allow_http, ...)")
        })?;
        let workers_own = matches!(
            parsed,
            K::MetadataEndpoint
                | K::ImdsV1Fallback
                | K::ContainerCredentialsRelativeUri
                | K::ContainerCredentialsFullUri
                | K::ContainerAuthorizationTokenFile
                | K::WebIdentityTokenFile
                | K::RoleArn
                | K::RoleSessionName
        );
        if workers_own {
            return Err(workers_own_option(url, key));
        }
        b = b.with_config(parsed, value);
    }
    for key in [
        K::Endpoint,
        K::S3Endpoint,
        K::StsEndpoint,
        K::Client(ClientConfigKey::ProxyUrl),
    ] {
        if let Some(endpoint) = b.get_config_value(&key) {
            forbidden_endpoint(&endpoint)?;
        }
    }
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let configured = [
        K::AccessKeyId,
        K::WebIdentityTokenFile,
        K::ContainerCredentialsRelativeUri,
        K::ContainerCredentialsFullUri,
    ]
    .into_iter()
    .any(has)
        || b.get_config_value(&K::SkipSignature)
            .and_then(|v| parse_bool(&v))
            .unwrap_or(false);
    if !configured && !policy.instance_credentials {
        b = b.with_skip_signature(true);
    }
    let allow_http = b.get_config_value(&K::Client(ClientConfigKey::AllowHttp));
    b.with_client_options(client_options(policy, allow_http))
        .with_retry(retry(policy))
        .with_http_connector(GuardedConnector)
        .build()
        .map_err(|e| build_failed(url, &e))
}

/// Makes every HTTP client of a store: no redirects, names resolved without
/// link-local or metadata addresses, HTTPS only unless the store's settings
/// allow HTTP, the store's timeouts.
#[derive(Debug)]
struct GuardedConnector;

impl HttpConnector for GuardedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let value = |key: ClientConfigKey| options.get_config_value(&key);
        let allow_http = value(ClientConfigKey::AllowHttp)
            .and_then(|v| parse_bool(&v))
            .unwrap_or(false);
        let duration = |key: ClientConfigKey, default: Duration| {
            value(key)
                .and_then(|v| parse_duration(&v))
                .unwrap_or(default)
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver))
            .https_only(!allow_http)
            .connect_timeout(duration(
                ClientConfigKey::ConnectTimeout,
                Duration::from_secs(5),
            ))
            .timeout(duration(ClientConfigKey::Timeout, Duration::from_secs(60)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(format!("stratus/{}", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = value(ClientConfigKey::ProxyUrl) {
            let proxy = reqwest::Proxy::all(&proxy).map_err(|e| object_store::Error::Generic {
                store: "stratus",
                source: Box::new(e),
            })?;
            builder = builder.proxy(proxy);
        }
        let client = builder.build().map_err(|e| object_store::Error::Generic {
            store: "stratus",
            source: Box::new(e),
        })?;
        Ok(HttpClient::new(client))
    }
}

/// `ClientOptions` renders durations as humantime (`30s`, `5s 500ms`); the
/// ones we set are whole seconds or milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for part in text.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits.parse().ok()?;
        total += match &part[digits.len()..] {
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return None,
        };
    }
    (!total.is_zero()).then_some(total)
}

/// A DNS resolver that drops link-local and metadata addresses, so no name
/// can lead a request there.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allowed_ip(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(format!(
                    "'{host}' resolves to a link-local or cloud metadata address, never a storage endpoint"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn allowed_ip(ip: IpAddr) -> bool {
    check_ip("", ip).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_that_use_the_workers_identity_are_refused_from_clients() {
        let policy = StoragePolicy::default();
        let cache = StoreCache::default();
        let azure = Location::parse("az://data@acct.blob.core.windows.net/x").unwrap();
        let s3 = Location::parse("s3://bucket/x").unwrap();
        for (location, key) in [
            (&azure, "msi_endpoint"),
            (&azure, "federated_token_file"),
            (&azure, "use_azure_cli"),
            (&s3, "metadata_endpoint"),
            (&s3, "web_identity_token_file"),
            (&s3, "container_credentials_relative_uri"),
        ] {
            let err = cache
                .store(&policy, "URL", location, &opts(&[(key, "x")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("worker's own"), "{err}");
        }
        let err = cache
            .store(&policy, "URL", &azure, &opts(&[("client_id", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_secret"), "{err}");
    }

    #[test]
    fn metadata_endpoints_are_refused_from_options() {
        let policy = StoragePolicy::default();
        let cache = StoreCache::default();
        let azure = Location::parse("az://data@acct.blob.core.windows.net/x").unwrap();
        let s3 = Location::parse("s3://bucket/x").unwrap();
        for (location, key, value) in [
            (&azure, "endpoint", "http://169.254.169.254/x"),
            (&azure, "proxy_url", "http://169.254.169.254:80"),
            (&s3, "endpoint", "http://[fd00:ec2::254]/"),
            (&s3, "endpoint_url_sts", "http://169.254.170.2/"),
        ] {
            let err = cache
                .store(&policy, "URL", location, &opts(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("refused") && err.contains(value), "{err}");
        }
        cache
            .store(
                &policy,
                "URL",
                &s3,
                &opts(&[("endpoint", "http://127.0.0.1:9"), ("allow_http", "true")]),
            )
            .unwrap();
    }

    #[test]
    fn one_store_serves_every_object_of_a_container() {
        let policy = StoragePolicy::default();
        let cache = StoreCache::default();
        let at = |url: &str| Location::parse(url).unwrap();
        let a = cache
            .store(&policy, "u", &at("s3://bucket/a.parquet"), &[])
            .unwrap();
        let b = cache
            .store(&policy, "u", &at("s3://bucket/dir/b.parquet"), &[])
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "a store per object");
        let other = cache
            .store(&policy, "u", &at("s3://other/a.parquet"), &[])
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        let with_options = cache
            .store(
                &policy,
                "u",
                &at("s3://bucket/a.parquet"),
                &opts(&[("region", "eu-west-1")]),
            )
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &with_options));
    }

    #[test]
    fn unknown_options_name_the_key() {
        let cache = StoreCache::default();
        let azure = Location::parse("az://data@acct.blob.core.windows.net/x").unwrap();
        let err = cache
            .store(
                &StoragePolicy::default(),
                "az://data/x",
                &azure,
                &opts(&[("acount_key", "x")]),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("acount_key") && err.contains("az://data/x"),
            "{err}"
        );
        let err = RequestOptions::parse(&opts(&[("stratus_nope", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stratus_nope"), "{err}");
    }

    #[test]
    fn allowed_prefixes_match_at_segment_boundaries_in_any_url_form() {
        let policy = StoragePolicy {
            url_allow: vec![
                "wasbs://isd@openstore.blob.core.windows.net/ISDWeather/".into(),
                "s3://bucket/team".into(),
            ],
            ..StoragePolicy::default()
        };
        for ok in [
            "https://openstore.blob.core.windows.net/isd/ISDWeather/year=*/month=*/*.parquet",
            "az://isd@openstore.blob.core.windows.net/ISDWeather",
            "s3://bucket/team/x.parquet",
        ] {
            policy
                .check_allowed(ok, &Location::parse(ok).unwrap())
                .unwrap();
        }
        for refused in [
            "https://openstore.blob.core.windows.net/isd/ISDWeatherX/a.parquet",
            "https://other.blob.core.windows.net/isd/ISDWeather/a.parquet",
            "s3://bucket/teamwork/x.parquet",
            "s3://bucket2/team/x.parquet",
        ] {
            let err = policy
                .check_allowed(refused, &Location::parse(refused).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("url_allow"), "{err}");
        }
    }

    #[test]
    fn durations_as_client_options_render_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_duration("5s 500ms"),
            Some(Duration::from_millis(5500))
        );
        assert_eq!(parse_duration("soon"), None);
    }
}
