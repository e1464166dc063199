//! The ordered list of in-kernel tests. Indices are positions in this list (the KTEST protocol
//! and `ktest-skip` count over it), so append new tests before the self-tests and do not reorder
//! casually. The ramdisk test runs after the frame-allocator test on purpose: the allocator test
//! writes to every free frame, and an intact archive afterwards shows the ramdisk was not handed
//! out as free memory.
#![deny(unsafe_code)]

use super::{
    cmdline, cputime, exceptions, ext2, frames, fs, heap, heap_frag, locking, mm, mmlock, pipe,
    ramdisk, rtc, runqueue, selftests, smp, tick, timer, tsc, uaccess, virtio, watchdog,
    KernelTest,
};

macro_rules! test {
    ($module:ident :: $function:ident) => {
        KernelTest {
            name: stringify!($function),
            run: $module::$function,
        }
    };
}

pub static TESTS: &[KernelTest] = &[
    test!(cmdline::cmdline_parsed_from_fw_cfg),
    test!(cmdline::cmdline_parser),
    test!(cmdline::cmdline_init_args_quoted),
    test!(heap::heap_alloc_and_free),
    test!(heap::heap_exhaustion_fails_without_panic),
    test!(heap::heap_reserve_outlives_user_allocations),
    test!(frames::frame_alloc_all_free_all),
    test!(ramdisk::ramdisk_archive_readable),
    test!(exceptions::breakpoint_is_reported_and_continues),
    test!(exceptions::page_fault_is_recovered_not_triple_fault),
    test!(exceptions::non_canonical_access_is_recovered),
    test!(exceptions::probe_write_reports_write_fault),
    test!(timer::timer_ticks_advance),
    test!(mm::mm_address_space_on_hardware),
    test!(mm::hw_fault_zero_page_then_write),
    test!(mm::hw_fork_cow_isolation),
    test!(mm::hw_fork_copies_pinned_page),
    test!(mm::hw_mprotect_exclusive_vs_shared),
    test!(mm::hw_bad_access_is_refused),
    test!(mm::hw_madv_dontneed_reads_zero),
    test!(mm::hw_era_switch_changes_reuse),
    test!(uaccess::user_copy_bad_pointers_are_efault),
    test!(uaccess::user_copy_through_page_faults),
    test!(uaccess::elf_loader_accepts_init_refuses_garbage),
    test!(rtc::rtc_wall_clock_is_plausible),
    test!(virtio::virtio_blk_queue_bookkeeping),
    test!(virtio::vda_polled_wait_on_the_boot_cpu_finishes_a_completion_an_ap_took),
    test!(fs::fs_kvec_read_write_through_file_ops),
    test!(fs::fs_mount_walk_longest_prefix),
    test!(ext2::ext2_glue_reads_vda_and_refuses_a_raw_disk),
    test!(ext2::ext2_in_kernel_format_write_remount),
    test!(watchdog::watchdog_nmi_arrives_twice_a_second),
    test!(watchdog::softlockup_reports_a_kernel_loop),
    test!(watchdog::softlockup_reports_a_stuck_application_processor),
    test!(watchdog::hung_task_reports_a_long_uninterruptible_sleep),
    test!(smp::smp_every_madt_cpu_online_with_its_own_percpu),
    test!(smp::smp_ipi_calls_run_once_on_their_target),
    test!(smp::smp_call_reentered_by_its_function_runs_once),
    test!(smp::smp_tlb_shootdown_reaches_every_cpu),
    test!(smp::smp_local_apic_timer_ticks_on_every_ap),
    test!(smp::smp_switch_to_keeps_mm_cpumask),
    test!(smp::smp_switch_to_takes_no_mmap_lock),
    test!(runqueue::runqueue_wakeup_placement),
    test!(runqueue::runqueue_pick_is_fifo_and_skips_stale_entries),
    test!(runqueue::runqueue_idle_cpu_pulls_work),
    test!(runqueue::runqueue_affinity_change_moves_a_queued_task),
    test!(heap_frag::heap_frag_tmpfs_listing_is_enomem),
    test!(heap_frag::heap_frag_uring_registration_is_enomem),
    test!(locking::lockdep_reports_an_inverted_pair_once),
    test!(locking::mmap_lock_readers_share_and_a_writer_excludes_both),
    test!(locking::nobkl_release_kicks_the_cpu_it_queued_for),
    test!(locking::lockdep_posted_function_holds_are_the_cpus),
    test!(uaccess::syscall_narrow_table_matches_widths),
    test!(mmlock::mmap_lock_kernel_fault_waits_or_is_efault_under_its_own_hold),
    test!(mmlock::smp_ptl_spinner_services_tlb_shootdowns),
    test!(tick::tick_leaves_its_work_to_the_lock_holder),
    test!(runqueue::runqueue_idle_loop_takes_a_halted_cpus_task),
    test!(runqueue::runqueue_new_task_queued_behind_its_creator),
    test!(tick::bkl_idle_loop_lets_in_only_a_long_waiter),
    test!(tick::bkl_idle_loop_lets_in_a_boot_cpu_waiting_with_interrupts_off),
    test!(tick::bkl_ring3_interrupt_waits_with_interrupts_enabled),
    test!(tick::loadavg_sample_catches_up_after_a_late_tick),
    test!(tick::hung_task_check_catches_up_after_a_deferred_second),
    test!(tsc::tsc_calibration_survives_a_descheduled_vcpu),
    test!(tsc::tsc_rate_agrees_with_the_pit),
    test!(tick::bkl_waiter_halts_while_the_lock_is_claimed_for_another_cpu),
    test!(tick::bkl_test_post_survives_a_busy_call_slot),
    test!(cputime::cputime_self_reads_include_owed_ticks),
    test!(cputime::cputime_boot_cpu_lock_wait_is_system_time),
    test!(pipe::pipe_faulting_read_put_back_past_capacity_then_write),
    test!(pipe::pipe_faulting_read_put_back_wakes_the_readers),
    // Harness self-tests: deliberately broken, run only by name, always last.
    test!(selftests::selftest_panic),
    test!(selftests::selftest_hang),
    test!(selftests::selftest_triple_fault),
    test!(selftests::selftest_page_fault),
    test!(selftests::selftest_stack_overflow),
];
