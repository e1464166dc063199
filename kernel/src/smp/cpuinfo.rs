//! `/proc/cpuinfo`: one paragraph per online CPU, in Linux's x86 format (`show_cpuinfo`).
//!
//! The identification fields come from CPUID on the reading CPU (every CPU of a machine is the
//! same model here); the topology fields treat each CPU as one core of one package, as QEMU's
//! default `-smp N` does; `apicid` is what each CPU read from its own local APIC at bring-up.
#![deny(unsafe_code)]

use alloc::string::String;
use core::arch::x86_64::__cpuid;
use core::fmt::Write;

use crate::percpu::MAX_CPUS;

/// The 12-byte vendor string and the 48-byte brand string from CPUID.
fn identification() -> (String, String, u32) {
    // CPUID exists on every x86_64 CPU; leaves 0, 1 and 0x8000_000x are architectural.
    let (leaf0, leaf1, max_ext) = (__cpuid(0), __cpuid(1), __cpuid(0x8000_0000).eax);
    let mut vendor = String::new();
    for word in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
        vendor.extend(word.to_le_bytes().iter().map(|&b| b as char));
    }
    let mut brand = String::new();
    if max_ext >= 0x8000_0004 {
        for leaf in 0x8000_0002..=0x8000_0004u32 {
            // Below the maximum extended leaf.
            let r = __cpuid(leaf);
            for word in [r.eax, r.ebx, r.ecx, r.edx] {
                brand.extend(
                    word.to_le_bytes()
                        .iter()
                        .filter(|&&b| b != 0)
                        .map(|&b| b as char),
                );
            }
        }
    }
    (vendor, String::from(brand.trim()), leaf1.eax)
}

/// The text of `/proc/cpuinfo`.
pub fn text() -> String {
    let (vendor, brand, signature) = identification();
    let base_family = (signature >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((signature >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        ((signature >> 4) & 0xf) | (((signature >> 16) & 0xf) << 4)
    } else {
        (signature >> 4) & 0xf
    };
    let khz = crate::time::tsc_khz();
    let cpus = super::online_count();
    let mut out = String::new();
    for cpu in (0..MAX_CPUS).filter(|cpu| super::online_mask() & (1 << cpu) != 0) {
        let apic = super::apic_id_of(cpu);
        let _ = write!(
            out,
            "processor\t: {cpu}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n\
             model name\t: {brand}\nstepping\t: {}\ncpu MHz\t\t: {}.{:03}\nphysical id\t: 0\n\
             siblings\t: {cpus}\ncore id\t\t: {cpu}\ncpu cores\t: {cpus}\napicid\t\t: {apic}\n\
             initial apicid\t: {apic}\nfpu\t\t: yes\n\n",
            signature & 0xf,
            khz / 1000,
            khz % 1000,
        );
    }
    out
}
