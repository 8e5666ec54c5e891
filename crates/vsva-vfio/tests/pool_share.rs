//! The IOMMU's table pool under many short-lived containers, and each process's share of it:
//! a container's teardown gives back every page its `VFIO_SET_IOMMU` and maps took, and one
//! process at its share gets `ENOMEM` while another still sets up and maps.

mod common;

use common::*;
use vsva_uapi::Errno;
use vsva_vfio::{DmaMapping, IommuType, Vfio, VfioConfig};

fn page_map(iova: u64) -> DmaMapping {
    DmaMapping {
        vaddr: GUEST_HPA,
        iova,
        size: 0x1000,
        read: true,
        write: true,
    }
}

#[test]
fn short_lived_containers_give_their_pages_back() {
    let io = iommu(small_iommu_config());
    let vfio = Vfio::new(io.clone(), VfioConfig::default()).unwrap();
    function(&vfio, 3);
    // The first container's setup makes the bus's context table, which stays (bounded).
    drop(container(&vfio, process(0), 3, IommuType::Type1v2));
    let start = io.table_pool().allocated();
    // The 16 MiB pool has 4096 pages; each setup takes a 32-page PASID directory and tables.
    for n in 1..=600u32 {
        let ty = if n % 2 == 0 {
            IommuType::Nesting
        } else {
            IommuType::Type1v2
        };
        let c = container(&vfio, process(n), 3, ty);
        map_guest_ram(&c);
        c.map_dma(&page_map(u64::from(n % 63 + 1) << 30)).unwrap();
        drop(c);
    }
    assert_eq!(io.table_pool().allocated(), start);
}

#[test]
fn a_process_at_its_share_gets_enomem_and_another_still_works() {
    let io = iommu(small_iommu_config());
    let vfio = Vfio::new(
        io.clone(),
        VfioConfig {
            table_pages_per_process: 8,
            ..VfioConfig::default()
        },
    )
    .unwrap();
    function(&vfio, 3);
    function(&vfio, 4);
    let start = io.table_pool().allocated();
    let greedy = container(&vfio, process(1), 3, IommuType::Type1v2);
    // Root 1 page; the first 1 GiB needs 3 tables, each further 1 GiB 2 more: 8 after three.
    for gib in 0..3u64 {
        greedy.map_dma(&page_map(gib << 30)).unwrap();
    }
    let refused = greedy.map_dma(&page_map(3 << 30)).unwrap_err();
    assert_eq!(refused.errno(), Errno::ENOMEM, "{refused}");
    // Its other containers are refused too: the share is the process's.
    let second = vfio.open_container(process(1));
    second.attach_group(vsva_vfio::GroupId(4)).unwrap();
    assert_eq!(
        second.set_iommu(IommuType::Type1v2).unwrap_err().errno(),
        Errno::ENOMEM
    );
    drop(second);
    // Another process is unaffected.
    let other = container(&vfio, process(2), 4, IommuType::Type1v2);
    map_guest_ram(&other);
    other.map_dma(&page_map(5 << 30)).unwrap();
    // Unmapping does not give tables back before teardown; teardown gives the share back.
    drop(greedy);
    let again = container(&vfio, process(1), 3, IommuType::Type1v2);
    again.map_dma(&page_map(0)).unwrap();
    drop(again);
    drop(other);
    assert!(
        io.table_pool().allocated() <= start + 1,
        "only a context table stays"
    );
}
