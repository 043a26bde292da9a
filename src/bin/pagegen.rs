//! `pagegen profile | export | import | train`: a thin command line over [`pagegen::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // `train` runs candle here: one thread, as in a runtime (see `init_main_env`), unless the
    // caller set `RAYON_NUM_THREADS` itself.
    pagegen::__private::init_main_env();
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
