//! Bad input gets a clear error naming the file at fault, and the cluster
//! keeps serving the next request.

mod common;

use common::cluster::start_cluster;
use common::*;
use std::path::Path;

fn copy_fixture_file(rel: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(Path::new(&fixture()).join(rel), to).unwrap();
}

const ONE_FILE: &str = "year=2008/month=1/part-00000.snappy.parquet";

/// A small Parquet file with `temperature` as Int32 (the fixture has Float64).
fn write_int_temperature(path: &Path) {
    use arrow_array::{Int32Array, RecordBatch};
    use std::sync::Arc;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter([(
        "temperature",
        Arc::new(Int32Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn bad_inputs_name_the_file_and_the_cluster_keeps_serving() {
    let dir = TempDir::new("bad");
    let root = dir.path();
    let cluster = start_cluster(2, 1 << 30).await;
    let client = stratus::Client::connect(&cluster.target).await.unwrap();
    let good = fixture();
    let check_still_serving = || async {
        assert_eq!(client.len(&good).await.unwrap(), FIXTURE_ROWS);
    };

    // 1. A path that matches nothing.
    let nothing = format!("{}/nope/year=*/*.parquet", root.display());
    let err = client.len(&nothing).await.unwrap_err().to_string();
    assert!(err.contains("match") && err.contains(&nothing), "{err}");
    check_still_serving().await;

    // 2. A file that is not Parquet.
    let not_parquet = root.join("notparquet/year=2008/month=1/part-0.parquet");
    std::fs::create_dir_all(not_parquet.parent().unwrap()).unwrap();
    std::fs::write(&not_parquet, "usaf,wban\n010010,99999\n").unwrap();
    let src = root.join("notparquet").display().to_string();
    let err = client.len(&src).await.unwrap_err().to_string();
    assert!(err.contains(&not_parquet.display().to_string()), "{err}");
    assert!(err.to_lowercase().contains("parquet"), "{err}");
    check_still_serving().await;

    // 3. A truncated file (a copy cut in half).
    let truncated = root.join("truncated/year=2008/month=1/part-0.parquet");
    copy_fixture_file(ONE_FILE, &truncated);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let src = root.join("truncated").display().to_string();
    let err = client.len(&src).await.unwrap_err().to_string();
    assert!(err.contains(&truncated.display().to_string()), "{err}");
    check_still_serving().await;

    // A file whose footer is intact but whose data was damaged fails when read
    // (persist), again naming the file, and leaves no frame behind.
    let damaged = root.join("damaged/year=2008/month=1/part-0.parquet");
    copy_fixture_file(ONE_FILE, &damaged);
    let mut bytes = std::fs::read(&damaged).unwrap();
    for b in bytes[4..2000].iter_mut() {
        *b = 0xAB;
    }
    std::fs::write(&damaged, bytes).unwrap();
    let src = root.join("damaged").display().to_string();
    let err = client
        .persist(&src, "damaged", false, None, Vec::new(), &mut |_, _, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&damaged.display().to_string()), "{err}");
    assert!(client.list().await.unwrap().is_empty());
    check_still_serving().await;

    // 4. A partition whose schema disagrees with the others.
    let mixed = root.join("mixed");
    copy_fixture_file(ONE_FILE, &mixed.join("year=2008/month=1/part-0.parquet"));
    let odd = mixed.join("year=2008/month=2/part-0.parquet");
    write_int_temperature(&odd);
    let err = client
        .len(&mixed.display().to_string())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&odd.display().to_string()), "{err}");
    assert!(err.contains("schema"), "{err}");
    check_still_serving().await;

    // 5. `year` in the file disagreeing with `year=` in the path.
    let moved = root.join("moved/year=2009/month=1/part-0.parquet");
    copy_fixture_file(ONE_FILE, &moved);
    let err = client
        .persist(
            &root.join("moved").display().to_string(),
            "moved",
            false,
            None,
            Vec::new(),
            &mut |_, _, _| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&moved.display().to_string()) && err.contains("year"),
        "{err}"
    );
    check_still_serving().await;

    client.close().await;
    drop(cluster);
}
