//! The toolstack, driven by xl's own config format, in the deterministic
//! simulator: a guest created from a config file finds its address in
//! xenstore, and reads a directory packed into FAT images across two disks
//! and writes an image file, through blkfront. Bad configs and bad disks
//! fail with typed errors, before anything is built.

use embedded_sdmmc::{BlockDevice as SdBlockDevice, LfnBuffer, Mode, TimeSource, Timestamp};
use embedded_sdmmc::{VolumeIdx, VolumeManager};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::BlockDevice;
use xenpal_sim::hal::DomId;
use xenpal_sim::toolstack::{Toolstack, ToolstackError, UnreachableReason};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::xl::{DiskSpec, DomainSpec, VifSpec, XlError};
use xenpal_sim::{SimConfig, SimPlatform};
use xenpal_tests::Scratch;

/// The site's files: two large enough that the site needs two 3 MiB
/// images.
fn site_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("index.html", b"<h1>home</h1>\n".to_vec()),
        ("css/Site Style.css", b"body { margin: 0 }\n".to_vec()),
        ("big/a.bin", (0..1_500_000u32).map(|x| x as u8).collect()),
        (
            "big/b.bin",
            (0..1_500_000u32).map(|x| (x >> 3) as u8).collect(),
        ),
        // Larger than the test's 3 MiB images: it gets one of its own.
        (
            "big/c.bin",
            (0..3_500_000u32).map(|x| (x >> 5) as u8 ^ 0x5a).collect(),
        ),
    ]
}

/// An xl config: everything xl needs, and xenpal's keys.
const CONFIG: &str = r#"# The same file feeds `xl create` (xl ignores xenpal_forward).
name = "reader"
type = "pvh"
kernel = "reader.elf"
memory = 16
vcpus = 1
on_poweroff = "destroy"
vif = [ 'ip=10.0.0.2/24, mac=00:16:3e:00:00:02, bridge=xenbr0, script=vif-bridge' ]
disk = [
    'format=raw, vdev=xvda, access=ro, target=site',   # a directory: packed
    'scratch.img,raw,xvdb,rw',                          # an image file
]
xenpal_forward = [ '0:80' ]
"#;

#[derive(Copy, Clone, Default)]
struct FixedTime;

impl TimeSource for FixedTime {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 54,
            zero_indexed_month: 0,
            zero_indexed_day: 0,
            hours: 12,
            minutes: 0,
            seconds: 0,
        }
    }
}

type Dir<'a, D> = embedded_sdmmc::Directory<'a, D, FixedTime, 4, 4, 1>;

/// Every file below `dir`, by long name, with its contents.
fn walk<D: SdBlockDevice>(dir: &Dir<'_, D>, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>)
where
    D::Error: std::fmt::Debug,
{
    let mut storage = [0u8; 256];
    let mut lfn = LfnBuffer::new(&mut storage);
    let mut entries = Vec::new();
    dir.iterate_dir_lfn(&mut lfn, |e, long| {
        let short = e.name.to_string();
        if !e.attributes.is_volume() && short != "." && short != ".." {
            let name = long.map(String::from).unwrap_or_else(|| short.clone());
            entries.push((short, name, e.attributes.is_directory()));
        }
        ControlFlow::Continue(())
    })
    .expect("list a directory");
    for (short, name, is_dir) in entries {
        let path = format!("{prefix}{name}");
        if is_dir {
            let sub = dir.open_dir(short.as_str()).expect("open a directory");
            walk(&sub, &format!("{path}/"), out);
        } else {
            let f = dir
                .open_file_in_dir(short.as_str(), Mode::ReadOnly)
                .expect("open a file");
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            while !f.is_eof() {
                let n = f.read(&mut buf).expect("read a file");
                data.extend_from_slice(&buf[..n]);
            }
            f.close().expect("close a file");
            out.insert(path, data);
        }
    }
}

/// What the guest saw.
#[derive(Debug, Default)]
struct Seen {
    ip: String,
    gateway: String,
    mac: String,
    /// (vbd id, read-only, bytes)
    disks: Vec<(String, bool, u64)>,
    /// Files on the read-only disks, and how many disks held each.
    files: BTreeMap<String, (Vec<u8>, usize)>,
}

const SCRATCH_SECTOR: u64 = 8;
const SCRATCH_DATA: [u8; 512] = [0xa5; 512];

/// The guest: read its address, read every file of the read-only disks,
/// write a sector of the writable one.
async fn reader(p: SimPlatform, seen: Arc<Mutex<Seen>>) {
    let xs = p.xenstore().expect("a xenstore").clone();
    let read = |path: &'static str| {
        let xs = xs.clone();
        async move { xs.read_string(TxId::NONE, path).await.unwrap_or_default() }
    };
    let mut s = Seen {
        ip: read("data/ip").await,
        gateway: read("data/gateway").await,
        mac: read("device/vif/0/mac").await,
        ..Seen::default()
    };
    for id in vbd_ids(&p).await.expect("list disks") {
        let disk = Blkfront::open(&p, &id, BlkfrontConfig::default())
            .await
            .expect("connect a disk");
        let info = disk.info();
        s.disks.push((id.clone(), info.read_only, info.bytes()));
        if info.read_only {
            let vm = VolumeManager::<_, _, 4, 4, 1>::new(&disk, FixedTime);
            let volume = vm.open_volume(VolumeIdx(0)).expect("a FAT volume");
            let root = volume.open_root_dir().expect("open /");
            let mut files = BTreeMap::new();
            walk(&root, "", &mut files);
            root.close().expect("close /");
            volume.close().expect("close the volume");
            for (path, data) in files {
                s.files.entry(path).or_insert((data, 0)).1 += 1;
            }
        } else {
            BlockDevice::write(&disk, SCRATCH_SECTOR, &SCRATCH_DATA)
                .await
                .expect("write");
            disk.flush().await.expect("flush");
        }
        disk.close().await.expect("close a disk");
    }
    *seen.lock().unwrap() = s;
}

#[test]
fn a_guest_from_an_xl_config_gets_its_address_and_disks() {
    let tmp = Scratch::new("toolstack-create");
    for (path, data) in site_files() {
        tmp.write(&format!("site/{path}"), &data);
    }
    tmp.write("scratch.img", &vec![0; 1 << 20]);
    tmp.write("reader.cfg", CONFIG.as_bytes());
    let spec = DomainSpec::from_file(tmp.path("reader.cfg")).unwrap();
    assert_eq!(spec.disks[0].target, tmp.path("site"));

    let mut ts = Toolstack::new(SimConfig::seeded(11));
    ts.fat_image_max_bytes(3 << 20);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let dom = ts
        .create(&spec, move |p| async move { reader(p, s).await })
        .unwrap();

    // Built paused, devices in place, before anything runs.
    let info = ts.domain(dom).unwrap();
    let vdevs: Vec<&str> = info.disks.iter().map(|d| d.vdev.as_str()).collect();
    // The site spans three images (one for the file too large for 3 MiB):
    // xvda, then the next free vdevs (xvdb is the image file's).
    assert_eq!(vdevs, ["xvda", "xvdc", "xvdd", "xvdb"]);
    assert_eq!(info.disks[0].packed.unwrap().count, 3);
    assert!(info.disks[..3].iter().all(|d| d.read_only) && !info.disks[3].read_only);
    // The images are served from files already deleted: nothing is left
    // in the temporary directory.
    let prefix = format!("xenpal-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(info.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
    let port = ts.forwarded_port(dom, 80).expect("a forward to port 80");
    assert_ne!(port, 0);

    let mut running = ts.start().unwrap();
    assert_eq!(running.forwarded_port(dom, 80), Some(port));
    let report = running.run();
    assert!(
        report.all_clean(),
        "{report:?}\n{}",
        running.sim().console_output(dom)
    );

    let s = seen.lock().unwrap();
    assert_eq!(s.ip, "10.0.0.2/24");
    assert_eq!(s.gateway, "10.0.0.1");
    assert_eq!(s.mac, "00:16:3e:00:00:02");
    let disks: Vec<(&str, bool)> = s
        .disks
        .iter()
        .map(|(id, ro, _)| (id.as_str(), *ro))
        .collect();
    // vbd ids: 51712 + 16 × index (xvda, xvdb, xvdc, xvdd).
    assert_eq!(
        disks,
        [
            ("51712", true),
            ("51728", false),
            ("51744", true),
            ("51760", true)
        ]
    );
    let want: BTreeMap<String, Vec<u8>> = site_files()
        .into_iter()
        .map(|(p, d)| (p.to_string(), d))
        .collect();
    let got: BTreeMap<String, Vec<u8>> = s
        .files
        .iter()
        .map(|(p, (d, copies))| {
            assert_eq!(*copies, 1, "{p} is on one disk only");
            (p.clone(), d.clone())
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "the files read back differ");

    // The writable image file got the guest's write.
    let img = std::fs::read(tmp.path("scratch.img")).unwrap();
    let at = (SCRATCH_SECTOR * 512) as usize;
    assert_eq!(&img[at..at + 512], &SCRATCH_DATA);
}

#[test]
fn bad_configs_and_bad_disks_are_typed_errors() {
    let tmp = Scratch::new("toolstack-errors");
    tmp.write("site/index.html", b"hi");
    std::fs::create_dir_all(tmp.path("empty/sub")).unwrap();
    tmp.write("odd.img", &[0; 1000]);

    // A bad vif spec, named with its line.
    tmp.write(
        "bad-vif.cfg",
        b"name = 'x'\nvif = [\n  'ip=10.0.0.2/24',\n  'ip=10.0.0.300',\n]\n",
    );
    match DomainSpec::from_file(tmp.path("bad-vif.cfg")) {
        Err(e @ XlError::BadVif { line: 4, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("line 4") && msg.contains("ip=10.0.0.300"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut ts = Toolstack::new(SimConfig::seeded(1));
    let guest = |_p: SimPlatform| async {};

    // A missing disk file: an error naming it, and no domain built.
    tmp.write(
        "missing.cfg",
        b"name = 'x'\ndisk = [ 'vdev=xvda, access=ro, target=missing.img' ]\n",
    );
    let spec = DomainSpec::from_file(tmp.path("missing.cfg")).unwrap();
    match ts.create(&spec, guest) {
        Err(e @ ToolstackError::DiskTarget { .. }) => {
            let ToolstackError::DiskTarget { path, source } = &e else {
                unreachable!()
            };
            assert_eq!(path, &tmp.path("missing.img"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(e.to_string().contains("missing.img"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ts.sim().status(DomId(1)), None, "nothing was built");

    let base = || DomainSpec::new("x");
    let disk = |target: &Path, vdev: &str| DiskSpec::new(target, vdev);
    type Expected = fn(&ToolstackError) -> bool;
    let cases: Vec<(DomainSpec, Expected)> = vec![
        (base().disk(disk(&tmp.path("empty"), "xvda")), |e| {
            matches!(e, ToolstackError::EmptyDirectory { .. })
        }),
        (base().disk(disk(&tmp.path("odd.img"), "xvda")), |e| {
            matches!(e, ToolstackError::DiskSize { bytes: 1000, .. })
        }),
        (base().disk(disk(&tmp.path("site"), "hda")), |e| {
            matches!(e, ToolstackError::BadVdev { .. })
        }),
        (
            base()
                .disk(disk(&tmp.path("site"), "xvda"))
                .disk(disk(&tmp.path("site"), "xvda")),
            |e| matches!(e, ToolstackError::DuplicateVdev { .. }),
        ),
        (base().vif(VifSpec::new()).forward(0, 80), |e| {
            matches!(
                e,
                ToolstackError::ForwardUnreachable {
                    guest_port: 80,
                    why: UnreachableReason::NoAddress
                }
            )
        }),
        (
            base()
                .vif(
                    VifSpec::new()
                        .ip(Ipv4Addr::new(10, 0, 0, 9), 24)
                        .bridge("xenbr1"),
                )
                .forward(0, 80),
            |e| {
                matches!(
                    e,
                    ToolstackError::ForwardUnreachable {
                        guest_port: 80,
                        why: UnreachableReason::OtherBridge { bridge },
                    } if bridge == "xenbr1"
                )
            },
        ),
        (base().memory_mib(1 << 20), |e| {
            matches!(e, ToolstackError::Memory { .. })
        }),
    ];
    for (spec, expected) in cases {
        match ts.create(&spec, guest) {
            Err(e) if expected(&e) => {
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{spec:?}: {other:?}"),
        }
        assert_eq!(ts.sim().status(DomId(1)), None, "nothing was built");
    }

    // A guest at .1 puts the gateway at .254; a second guest may not take
    // an address in use.
    let first = ts
        .create(
            &base().vif(VifSpec::new().ip(Ipv4Addr::new(10, 0, 0, 1), 24)),
            guest,
        )
        .unwrap();
    assert_eq!(
        ts.sim()
            .xenstore_read(&format!("/local/domain/{}/data/gateway", first.0)),
        Some(b"10.0.0.254".to_vec())
    );
    assert_eq!(
        ts.sim()
            .xenstore_read(&format!("/local/domain/{}/device/vif/0/mac", first.0)),
        Some(format!("00:16:3e:00:{:02x}:00", first.0).into_bytes())
    );
    for taken in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 254)] {
        match ts.create(&base().vif(VifSpec::new().ip(taken, 24)), guest) {
            Err(ToolstackError::AddressInUse { ip }) => assert_eq!(ip, taken),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_demo_sites_config_reads() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/site.cfg");
    let spec = DomainSpec::from_file(&cfg).unwrap();
    assert_eq!(spec.name, "static-site");
    assert_eq!(spec.vifs[0].ip, Some((Ipv4Addr::new(10, 0, 0, 2), 24)));
    assert!(spec.disks[0].target.is_dir(), "{:?}", spec.disks[0]);
    assert_eq!(spec.forwards[0].guest_port, 80);
}
