//! `pagegen profile | export | import`: a thin command line over [`pagegen::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = match pagegen::cli::parse(std::env::args_os().skip(1)) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("pagegen: {e}\n{}", pagegen::cli::USAGE);
            return ExitCode::from(pagegen::cli::EXIT_USAGE);
        }
    };
    let code = pagegen::cli::run(
        cmd,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
