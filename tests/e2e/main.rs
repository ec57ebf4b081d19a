//! End-to-end tests: the real observer, real uprobes in this kernel, the
//! real leaky gateway driven by real TCP sessions.
//!
//! Most need root (or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE) and a kernel
//! with uprobes, and fail when either is missing. Set
//! `OBSERVER_SKIP_EBPF_TESTS=1` to skip those explicitly on a machine
//! without eBPF: they are then reported as ignored, with the reason (CI
//! never sets it). `OBSERVER_TARGETS_DIR` must name the directory of the
//! built target programs; `cargo xtask test` sets it, and
//! `OBSERVER_DIST_BINARY` to the static binary it built (without it, the
//! test of that binary is skipped, with the reason).
//!
//! This is the test binary's own main (libtest-mimic): the usual arguments
//! work (`cargo test -p pool-observer --test e2e -- FILTER`, `--exact`,
//! `--list`, `--include-ignored`). Tests run one at a time unless
//! `--test-threads` says otherwise: some check that no program of ours
//! stays loaded after an observer exits, which a concurrently running
//! observer would falsify.

mod allocators;
mod ci_gate;
mod containers;
mod corpus;
mod detach;
mod dist;
mod errors;
mod exits;
mod growth_and_diff;
mod harness;
mod hostile_input;
mod leak_report;
mod metrics;
mod overhead;
mod panics;
mod pprof;
mod real_crates;
mod stacks;
mod stalls;
mod support;
mod top;

use harness::Needs;
use libtest_mimic::{Arguments, Trial};

fn main() {
    default_stop_signals();
    let mut arguments = Arguments::from_args();
    arguments.test_threads.get_or_insert(1);
    libtest_mimic::run(&arguments, tests()).exit();
}

/// The tests send SIGINT and SIGQUIT to observers at every moment of
/// their start, the way a terminal does: before the observer installs its
/// handlers the default action must stop it. A shell that starts this
/// suite as a background job (`cargo test … &` in a script) sets both to
/// "ignore", which every child inherits across exec, and a SIGINT sent in
/// that first moment is then lost. Give the observers what a terminal
/// gives them.
fn default_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: restoring a default disposition; no handler is involved.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// `module::function` tests, each under that name.
macro_rules! tests {
    ($needs:expr => $($test:path),* $(,)?) => {
        [$(harness::trial(stringify!($test), $needs, $test)),*]
    };
}

fn tests() -> Vec<Trial> {
    let mut all = Vec::new();
    all.extend(tests!(Needs::Ebpf =>
        allocators::libc_malloc_in_the_shared_object_gives_the_exact_leak,
        allocators::shared_object_mistakes_are_one_line_errors,
        allocators::a_library_loaded_after_attach_is_probed_and_walked,
        allocators::preset_libc_gives_the_exact_leak_through_realloc_and_memalign,
        allocators::preset_libc_finds_the_c_library_when_static_or_musl,
        allocators::run_with_preset_libc_probes_the_c_library_from_the_start,
        allocators::preset_rust_global_on_the_gateway_counts_reallocs_and_the_exact_leak,
        allocators::preset_jemalloc_on_a_jemalloc_gateway_gives_the_exact_leak,
        allocators::preset_mimalloc_on_a_mimalloc_gateway_gives_the_exact_leak,
        allocators::c_pools_with_auto_locations_give_the_exact_leak,
        ci_gate::leaky_gateway_fails_the_run_with_the_disconnect_site,
        ci_gate::suppressed_leak_passes,
        ci_gate::fixed_gateway_passes_without_suppressions,
        ci_gate::failing_command_and_bad_gate_files_are_errors,
        containers::observer_inside_the_targets_pid_namespace,
        containers::observer_on_the_host_target_in_a_container,
        containers::observer_in_a_namespace_target_in_a_nested_one,
        containers::a_proc_of_another_namespace_is_refused,
        containers::observer_run_inside_a_pid_namespace_gates_the_leak,
        corpus::stock_build_without_debug_info,
        corpus::line_tables_give_file_and_line,
        corpus::split_debug_file_found_by_build_id_for_a_stripped_binary,
        corpus::generic_pool_copies_are_all_probed_and_told_apart,
        corpus::auto_locations_from_full_dwarf,
        corpus::release_inlined_everywhere_is_probed_where_control_enters_each_instance,
        corpus::deleted_binaries_and_other_mount_namespaces_are_symbolized,
        real_crates::object_pool_guard_leak_is_reported_where_the_inlined_pull_runs,
        real_crates::object_pool_guard_leak_is_followed_through_a_debug_file,
        real_crates::drop_in_place_of_the_guard_selects_only_its_glue,
        real_crates::object_pool_stock_build_says_which_build_setting_is_needed,
        real_crates::lto_gateway_disconnect_leak_is_reported_exactly,
        real_crates::slab_keys_left_in_flight_are_reported_where_the_inlined_insert_runs,
        real_crates::lifeguard_dead_letters_are_reported_where_the_inlined_new_runs,
        real_crates::stock_builds_say_which_build_setting_is_needed,
        real_crates::line_tables_only_say_where_it_was_inlined_and_what_build_is_needed,
        real_crates::inspect_follows_the_guard_to_its_buffer_or_says_why_not,
        real_crates::options_that_cannot_fit_an_inlined_allocate_are_refused,
        detach::detaching_leaves_no_probe_behind,
        detach::a_kill_while_attaching_leaks_nothing,
        exits::an_error_while_attached_still_gives_the_final_report,
        exits::a_report_that_cannot_be_written_still_leaves_the_counters,
        exits::a_failed_run_ends_its_command_and_still_reports,
        exits::sigint_at_any_moment_of_the_start_leaves_nothing_behind,
        exits::sigint_while_the_probes_are_placed_leaves_nothing_behind,
        growth_and_diff::disconnect_site_reads_as_steady_growth,
        growth_and_diff::marks_and_diff_give_bytes_per_cycle,
        growth_and_diff::older_than_keeps_in_flight_buffers_out,
        hostile_input::a_debug_link_to_a_fifo_neither_hangs_nor_stops_the_session,
        hostile_input::a_debug_link_to_a_root_only_host_file_is_not_opened,
        hostile_input::a_debug_link_to_dev_zero_is_not_read,
        hostile_input::planted_links_in_the_output_directory_are_not_followed,
        hostile_input::bad_destinations_are_reported_before_attaching,
        hostile_input::control_on_an_existing_file_leaves_it_and_exits_2,
        hostile_input::an_over_long_control_request_is_refused_and_the_session_goes_on,
        leak_report::disconnect_leak_is_reported_by_allocating_stack,
        leak_report::buffers_outstanding_at_attach_are_not_misattributed,
        leak_report::target_exiting_while_attached_still_gets_a_report,
        panics::panics_caught_by_catch_unwind_leave_the_target_running,
        panics::panics_in_tokio_tasks_leave_the_target_running,
        panics::a_release_the_kernel_cannot_probe_is_followed_at_its_call_sites,
        panics::plain_uretprobes_are_refused_where_a_panic_would_abort_the_target,
        panics::calls_in_flight_when_their_thread_exits_are_counted,
        panics::forks_and_execs_of_the_target_are_reported,
        panics::a_program_that_cannot_unwind_gets_plain_uretprobes,
        pprof::go_tool_pprof_reads_the_leak_with_its_exact_bytes,
        pprof::diff_base_between_two_marks_shows_the_growth_per_cycle,
        pprof::attach_writes_each_profile_to_its_output,
        real_crates::sharded_slab_keys_are_followed_with_auto_locations,
        real_crates::sharded_slab_keys_without_their_pool_collide,
        real_crates::sharded_slab_stock_build_says_what_auto_needs,
        real_crates::slotmap_keys_left_in_the_map_are_reported_with_auto_locations,
        real_crates::slotmap_stock_build_says_which_build_setting_is_needed,
        real_crates::attach_refuses_an_inferred_id_that_is_no_identity,
        metrics::prometheus_scrapes_the_exact_leaked_bytes,
        metrics::a_metrics_port_in_use_is_refused_before_attaching,
        overhead::max_overhead_stops_the_session_with_a_final_report,
        overhead::always_on_statistics_time_every_run,
        stacks::chains_that_share_stack_pointers_are_never_merged,
        top::top_shows_the_leak_and_its_keys_work,
    ));
    all.push(harness::conditional_trial(
        "panics::repaired_uretprobes_let_panics_unwind",
        Needs::Ebpf,
        Some(panics::repair_is_allowed),
        panics::repaired_uretprobes_let_panics_unwind,
    ));
    all.push(harness::conditional_trial(
        "dist::the_static_binary_runs_alone_from_an_empty_directory",
        Needs::Ebpf,
        Some(dist::dist_binary_given),
        dist::the_static_binary_runs_alone_from_an_empty_directory,
    ));
    all.push(harness::conditional_trial(
        "dist::the_static_binary_checks_out_and_gates_a_ci_run",
        Needs::Ebpf,
        Some(dist::dist_binary_given),
        dist::the_static_binary_checks_out_and_gates_a_ci_run,
    ));
    all.extend(tests!(Needs::Files =>
        corpus::inlined_release_needs_auto_and_full_dwarf,
        corpus::inspect_lists_inlined_instances_and_their_entries,
        corpus::inspect_shows_copies_signatures_and_probe_points,
        harness::every_test_is_listed,
        panics::inspect_tells_whether_panics_unwind_and_how_returns_are_seen,
        real_crates::inspect_says_what_the_key_is_and_what_is_no_identity,
    ));
    all.extend(errors::trials());
    all
}
