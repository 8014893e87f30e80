//! `railyard controller add-voter|remove-voter`: changes of the controller quorum (the
//! metadata group's voters), in the manner of `kafka-metadata-quorum.sh add-controller` and
//! `remove-controller` (AddRaftVoter, RemoveRaftVoter). Every broker already follows the
//! metadata log as a learner, so adding promotes a broker and removing demotes a voter, which
//! stays a broker. Each returns once the new configuration applied. Removing the last voter,
//! or one whose removal would leave too few caught-up voters for a quorum, is refused.

use clap::{Args, Subcommand};

use super::output::emit;
use super::{CliError, Connect};

/// `railyard controller ...`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(subcommand)]
    command: ControllerCommand,
}

#[derive(Subcommand, Debug)]
enum ControllerCommand {
    /// Make a broker a controller voter.
    AddVoter {
        /// The broker's node id.
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        id: i32,
    },
    /// Make a controller voter an ordinary broker again.
    RemoveVoter {
        /// The broker's node id.
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        id: i32,
    },
}

/// Runs `railyard controller ...`.
pub async fn run(a: ControllerArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    match a.command {
        ControllerCommand::AddVoter { id } => {
            admin.add_controller_voter(id).await?;
            emit(&format!("broker {id} is a controller voter\n"))?;
        }
        ControllerCommand::RemoveVoter { id } => {
            admin.remove_controller_voter(id).await?;
            emit(&format!("broker {id} is no longer a controller voter\n"))?;
        }
    }
    Ok(())
}
