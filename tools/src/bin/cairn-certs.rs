//! `cairn-certs`: the certificates of a secure cluster (see
//! `cairn_tools::certs`): a CA, one certificate per member (serverAuth +
//! clientAuth, SANs for its hosts) and client certificates for etcdctl.
//!
//! ```text
//! cairn-certs ca     --dir pki
//! cairn-certs member --dir pki --name m1 --hosts 10.0.0.1,h1.example,localhost,127.0.0.1
//! cairn-certs client --dir pki --name root
//! ```

use anyhow::Result;
use cairn_tools::certs::{self, Written};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Make a CA, member and client certificates for a secure cairn cluster")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A self-signed CA: DIR/ca.pem and DIR/ca-key.pem.
    Ca {
        /// Directory of the CA (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = certs::DEFAULT_CA_CN)]
        cn: String,
        /// Validity in days.
        #[arg(long, default_value_t = certs::DEFAULT_CA_DAYS)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// A member's certificate (client and peer ports, server and client
    /// side): DIR/NAME.pem and DIR/NAME-key.pem, signed by DIR's CA.
    Member {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        dir: PathBuf,
        /// The member's name (its certificate's CN and file names).
        #[arg(long)]
        name: String,
        /// Comma-separated IP addresses and DNS names the member is reached
        /// at (as in its client and peer URLs).
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = certs::DEFAULT_LEAF_DAYS)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// A client certificate (`etcdctl --cert --key`): DIR/NAME.pem and
    /// DIR/NAME-key.pem, signed by DIR's CA.
    Client {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        dir: PathBuf,
        /// The client's name (its certificate's CN and file names).
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = certs::DEFAULT_LEAF_DAYS)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(written) => {
            println!(
                "wrote {} and {}",
                written.cert.display(),
                written.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line, with the causes (`{:#}`), never a backtrace.
            eprintln!("cairn-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<Written> {
    Ok(match args.command {
        Command::Ca {
            dir,
            cn,
            days,
            force,
        } => certs::make_ca(&dir, &cn, days, force)?,
        Command::Member {
            dir,
            name,
            hosts,
            days,
            force,
        } => certs::make_member(&dir, &name, &hosts, days, force)?,
        Command::Client {
            dir,
            name,
            days,
            force,
        } => certs::make_client(&dir, &name, days, force)?,
    })
}
