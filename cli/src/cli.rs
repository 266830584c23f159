//! Command-line arguments. Global options are named as the AWS CLI names them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "chatctl",
    version,
    about = "Provision, operate and tear down a serverless WebSocket chat on AWS",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Stack name; every resource name derives from it [default: chat]
    #[arg(long, global = true, env = "CHATCTL_STACK")]
    pub stack: Option<String>,
    /// API Gateway stage [default: dev]
    #[arg(long, global = true)]
    pub stage: Option<String>,
    /// AWS region [default: `region` in chatctl.toml, else AWS_REGION, else
    /// AWS_DEFAULT_REGION, else the profile's; us-east-1 for a local emulator]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint (an emulator such as moto)
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Config file [default: ./chatctl.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// More logging (-v: steps, -vv: AWS calls)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the functions, show the plan, and create or update the stack
    Up(UpArgs),
    /// Remove every resource of the stack, and nothing else
    Down(DownArgs),
    /// Show every resource: present, missing or drifted (exit code 3 when not all present)
    Status,
    /// The deployed API's routes
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// The functions' CloudWatch logs, merged by time
    Logs(LogsArgs),
    /// Mint a connection token for the deployed stack; `token rotate` makes a new secret
    Token(TokenArgs),
    /// Check the live chat end to end: connect, send, echo, history, close
    Smoke(SmokeArgs),
    /// The open connections: list them, send them a system message, close them
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
    /// Live view of the chat: open connections, messages, errors, latency, functions
    Top(TopArgs),
    /// A chat-shaped load test: users, rooms, messages; latency, losses, errors
    Load(LoadArgs),
    /// What the chat costs: measured from its metrics, or projected for a traffic shape
    Cost(CostArgs),
    /// Run the whole stack locally: emulator, functions, WebSocket gateway
    Dev(DevArgs),
    /// Remove the stack's lock after showing who holds it (a run that is gone)
    Unlock(UnlockArgs),
    /// The releases `up` published: number, time, code, configuration, which is live
    Releases,
    /// Move the functions back to an earlier release: no build, no upload, no API deployment
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The release to go back to (default: the one before the live one)
    #[arg(long, value_name = "N")]
    pub to: Option<u32>,
    /// How long to wait for another run's lock of the stack (0: fail at once)
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub lock_timeout: String,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    /// How far back the metrics go (1m to 15d); the cost is scaled to a day
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Project a traffic shape instead of measuring, e.g.
    /// users=10000,messages_per_user_per_hour=30,room_size=10 (also
    /// message_bytes, direct_percent, hours_per_day, ping_minutes)
    #[arg(long, value_name = "SHAPE")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The WebSocket URL to load (ws:// or wss://), e.g. the one `chatctl
    /// dev` prints [default: the deployed stack's]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Users, each opening --connections connections
    #[arg(long, default_value_t = 10)]
    pub users: u32,
    /// Connections per user (the stack's `connections_per_user` limit applies)
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
    /// Rooms the users are spread over, round robin
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Messages per minute per user, spread over its connections
    #[arg(long, default_value_t = 6.0)]
    pub rate: f64,
    /// Bytes of each message's text (at least 64: it carries sender, number and time)
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Share of messages sent direct to another user, in %
    #[arg(long, default_value_t = 0)]
    pub direct: u8,
    /// How long the users send, once every connection is open
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// New connections per second (API Gateway's quota: 500 per account and region)
    #[arg(long, default_value_t = 100)]
    pub connect_rate: u32,
    /// Longest wait for the last deliveries once sending stops (it ends as
    /// soon as every delivery owed has arrived)
    #[arg(long, default_value = "10s")]
    pub drain: String,
    /// What the run must meet, e.g. 'p99<500ms,lost=0': exit 1 when it
    /// does not. Figures: p50 p95 p99 max handshake_p50 … handshake_max
    /// (durations); lost duplicated out_of_order refused errors
    /// failed_connections delivered_per_second (numbers)
    #[arg(long, value_name = "CLAUSES")]
    pub slo: Option<String>,
    /// Also write a self-contained HTML page: figures, latency over time, histograms
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one snapshot and exit
    #[arg(long)]
    pub once: bool,
    /// How far back the metrics go, e.g. 15m, 1h, 1d (at most 15d)
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// How often the view refreshes
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Port of the local WebSocket API and @connections endpoint (0: any free port)
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Use the functions' binary already built in target/debug
    #[arg(long)]
    pub no_build: bool,
    /// Do not rebuild and restart functions when their sources in handlers/ change
    #[arg(long)]
    pub no_watch: bool,
    /// Run the functions' Lambda build (`cargo lambda build --release`, the
    /// binary `up` deploys) instead of the debug build, to measure speed and
    /// CPU as on AWS; x86_64 machines only; sources are not watched
    #[arg(long)]
    pub lambda_build: bool,
    /// Processes each function starts with, each serving one event at a time
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Processes a function may scale up to when events wait and every one
    /// is busy, as Lambda runs more sandboxes under load
    #[arg(long, default_value_t = 16)]
    pub max_instances: usize,
    /// Close connections idle this long (API Gateway: 10m)
    #[arg(long, default_value = "10m")]
    pub idle_timeout: String,
    /// Close every connection this long after it opened (API Gateway: 2h);
    /// shorten it to see how a client takes the cut
    #[arg(long, default_value = "2h")]
    pub max_lifetime: String,
    /// Do not ask before replacing or deleting resources of the local stack
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Start every function Inactive, as after weeks idle on AWS: each
    /// one's first invocation fails (the first handshake gets 500 from the
    /// authorizer, the next 502 from $connect)
    #[arg(long, env = "CHATCTL_DEV_INACTIVE_FUNCTIONS")]
    pub inactive_functions: bool,
    /// For this long once ready, act as AWS does while a fresh deploy's
    /// permissions propagate: handshakes get 500, posts to @connections 403
    /// (e.g. 10s)
    #[arg(long, env = "CHATCTL_DEV_PERMISSION_LAG", value_name = "DURATION")]
    pub permission_lag: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Connection id, user, room and when it connected; all, or a room's or a user's
    List {
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Send a system message: `send ID TEXT`, `send --room R TEXT` or `send --user U TEXT`
    Send {
        /// [ID] TEXT
        #[arg(value_name = "ID|TEXT", num_args = 1..=2, required = true)]
        args: Vec<String>,
        #[arg(long, conflicts_with = "user")]
        room: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// The @connections URL [default: the deployed stack's; `chatctl dev` prints its own]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Close connections (their `$disconnect` runs): `kick ID` or `kick --user U`
    Kick {
        #[arg(value_name = "ID", required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// The @connections URL [default: the deployed stack's; `chatctl dev` prints its own]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Keep a user out: their connections are closed and their handshakes get 403
    Ban {
        #[arg(long)]
        user: String,
        /// How long (30m, 24h, 7d) [default: until `unban`]
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why, for `bans` to show
        #[arg(long)]
        reason: Option<String>,
        /// The @connections URL [default: the deployed stack's; `chatctl dev` prints its own]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Lift a user's ban
    Unban {
        #[arg(long)]
        user: String,
    },
    /// The bans in force: user, until when, why
    Bans,
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// List the routes of the live API: key, function, authorization, integration
    List,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Functions by short name (authorizer, connect, disconnect, default,
    /// sendmessage, getmessages, join), or `access` for the stage's access
    /// log; every function when none is given
    #[arg(value_name = "FUNCTION")]
    pub functions: Vec<String>,
    /// Start this long ago (10m, 2h) or at this RFC 3339 time
    #[arg(long, default_value = "10m")]
    pub since: String,
    /// CloudWatch Logs filter pattern, passed through
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Keep printing new events until Ctrl-C
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Events per FilterLogEvents page (tests use small pages)
    #[arg(long, hide = true, default_value_t = crate::logs::MAX_PAGE_SIZE)]
    pub page_size: i32,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: Option<TokenCommand>,
    /// The user id the token proves (the `sub` claim)
    #[arg(long, required = true)]
    pub user: Option<String>,
    /// How long the token stays valid (30m, 24h, 7d; at most 30d)
    #[arg(long, default_value = "24h")]
    pub ttl: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new version of the stack's token secret; tokens signed with the previous one stay valid until they expire (at most 30 days)
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Stop accepting tokens signed with the secret's version before this one, within 5 minutes (a leaked secret)
    #[arg(long)]
    pub revoke_previous: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: exit 3 when changes are pending, 0 when none (for CI)
    #[arg(long, requires = "dry_run")]
    pub exit_code: bool,
    /// With --dry-run: save the plan to FILE, for `up --plan FILE`
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub out: Option<PathBuf>,
    /// Apply the plan saved in FILE, exactly, with the zips it was made with
    /// (no build); refused, changing nothing, when anything it was computed
    /// on changed
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub plan: Option<PathBuf>,
    /// Do not ask before replacing or deleting resources
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Use the zips already built instead of running cargo-lambda
    #[arg(long)]
    pub no_build: bool,
    /// Where the built zip is: <DIR>/chat-functions/bootstrap.zip [default: target/lambda]
    #[arg(long, value_name = "DIR")]
    pub lambda_dir: Option<PathBuf>,
    /// Once the stack is up, run `chatctl smoke` against it (exit 1 when it fails)
    #[arg(long, conflicts_with = "dry_run")]
    pub smoke: bool,
    /// How long to wait for another run's lock of the stack (0: fail at once)
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub lock_timeout: String,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The WebSocket URL to check (ws:// or wss://), e.g. the one `chatctl
    /// dev` prints [default: the deployed stack's]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How long to keep trying while failures look like IAM changes still
    /// propagating (HTTP 5xx at the handshake, no echo)
    #[arg(long, default_value = "60s")]
    pub wait: String,
    /// Connect with this token instead of one chatctl mints (with auth =
    /// "oidc", a token of your identity provider)
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// List what would be deleted, kept and left alone; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before deleting tables that hold data
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep the DynamoDB tables and their data
    #[arg(long)]
    pub keep_data: bool,
    /// How long to wait for another run's lock of the stack (0: fail at once)
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub lock_timeout: String,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Do not ask before removing the lock
    #[arg(long, short = 'y')]
    pub yes: bool,
}
