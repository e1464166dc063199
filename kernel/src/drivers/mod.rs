//! Device drivers: PCI configuration space and the virtio block devices (`vda` behind
//! `/dev/vda`, `vdb` under the root filesystem).

pub mod dma;
pub mod pci;
pub mod virtio_blk;

/// Finds and initialises the devices. Call after the PIC is set up (drivers unmask their
/// interrupt lines) and the heap exists (DMA memory comes from it), before interrupts are on.
pub fn init() {
    virtio_blk::init();
}
