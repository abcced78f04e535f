"""The test tiers: which tests ``make test-fast`` leaves out (``tests/conftest.py`` marks them ``slow``)."""

import pytest

# `make test-fast` runs `pytest -m "not slow"`: the edit-test loop, under a minute on two cores. A test is
# slow when it builds or synthesises a corpus, runs Beam, drives a browser, starts the GCS emulator, reads
# a real label file or takes more than about a second. `@pytest.mark.slow` marks one where it is written;
# the tables below mark the rest in one place (measured with `pytest --durations`): whole modules, the
# fixtures whose setup is slow (a test that uses one is slow), and single tests by name.
SLOW_MODULES = {
    "test_consumers",
    "test_gcs",
    "test_hub_loading",
    "test_layers",
    "test_output_folders",
    "test_recipe",
    "test_resume",
    "test_row_truth",
}
SLOW_FIXTURES = {
    "": {"clean_build", "faulted_build"},  # in every module: the shared builds (tests/conftest.py)
    "test_dataflow": {"plans"},
    "test_padchest_english": {"real"},
    "test_phrases": {"iu_reports"},
    "test_run_record": {"built"},
    "test_synth": {"corpus"},
    "test_synth_vqa_datasets": {"corpus"},
    "test_task_difference_vqa": {"synthetic_patients"},
    "test_task_vqa": {"build"},
    "test_taxonomy": {"padchest_rows"},
    "test_tokenize": {"built"},
}
SLOW_TESTS = {
    "test_boxes": {
        "test_corner_tuple_merge_gives_the_box_merge_values",
        "test_fusion_is_order_free_accounts_for_every_box_and_averages_within_its_members",
        "test_merged_boxes_no_longer_overlap_and_cover_every_input",
    },
    "test_chexmask_space": {
        "test_mask_round_trip_keeps_the_shape",
        "test_preprocessed_rows_mask_and_landmark_contour_agree_after_mapping",
    },
    "test_comparisons": {"test_real_comparing_sentences_keep_their_findings"},
    "test_coordinate_frames": {"test_a_polygon_reads_back_vertex_by_vertex"},
    "test_export_chexmix": {"test_no_answer_is_ever_cut"},
    "test_faults": {"test_too_small_a_corpus_is_refused_and_left_empty"},
    "test_geometry": {"test_find_coordinates_reads_back_every_rendered_shape_in_order"},
    "test_images": {"test_the_image_stage_encodes_at_the_configured_level"},
    "test_inputs_accounted": {
        "test_a_broken_link_is_a_reject_naming_it",
        "test_a_gzipped_dicom_tree_reads_the_same_records_and_pixels",
        "test_a_link_cycle_is_read_once",
        "test_a_study_folder_behind_a_link_is_read_like_the_real_one",
        "test_an_unreadable_study_folder_is_a_reject_and_counts_reconcile",
        "test_either_csv_alone_is_read",
        "test_plain_dicom_is_read_before_gzipped_and_the_other_filtered",
    },
    "test_io_match": {"test_links_are_listed_as_the_tree_they_point_into", "test_local_match_finds_what_beam_finds"},
    "test_labeler": {"test_iu_development_reports_against_negbio_gold"},
    "test_labels": {"test_harmonize_is_complete_valid_and_order_independent"},
    "test_masks": {
        "test_every_real_siim_row_in_the_torchxrayvision_wheel_round_trips",
        "test_round_trip_is_exact_on_random_masks",
        "test_siim_real_rows_decode_like_the_competition_code_and_reencode_identically",
    },
    "test_padchest_english": {"test_random_runs_state_every_finding_with_only_its_own_words"},
    "test_privacy": {"test_scrub_leaves_every_iu_xray_development_report_unchanged"},
    "test_read_plans": {
        "test_a_plan_with_nothing_to_read_reads_nothing",
        "test_every_source_plan_pickles_for_the_workers",
        "test_two_rounds_serially_and_on_beam_agree",
    },
    "test_reports": {"test_sections_are_verbatim_slices_and_cover_all_content"},
    "test_self_contained": {"test_no_tracked_file_refers_outside_the_repository"},
    "test_severity": {"test_the_beam_combine_fits_the_same_table_over_several_bundles"},
    "test_source_chexmask": {"test_beam_graph_reads_what_the_serial_run_reads"},
    "test_source_imagenome": {"test_beam_graph_matches_serial_run", "test_synthetic_corpus_split_file_is_read_by_name"},
    "test_source_mimic": {"test_the_report_is_read_once_per_study_and_beam_agrees"},
    "test_source_padchest": {
        "test_beam_graph_reads_what_the_serial_run_reads",
        "test_real_label_csv_from_the_torchxrayvision_wheel",
    },
    "test_source_siim": {"test_the_beam_graph_reads_what_the_serial_run_reads"},
    "test_source_vindr": {
        "test_beam_graph_reads_what_the_serial_run_reads",
        "test_real_kaggle_file_from_the_torchxrayvision_wheel",
    },
    "test_synth": {"test_two_generations_are_byte_identical_and_the_seed_matters"},
    "test_synth_vqa_datasets": {"test_same_studies_and_seed_give_the_same_bytes"},
    "test_task_difference_vqa": {"test_generated_patients_agree_with_the_independent_reading"},
    "test_taxonomy": {"test_every_real_padchest_sentence_gives_mentions_without_error"},
    "test_translation": {"test_a_build_with_a_model_translates_padchest_reports_and_radixpert_uses_them"},
    "test_vqgan": {
        "test_bf16_trunk_keeps_shapes_and_quantizes_in_fp32",
        "test_converted_meta_checkpoint_loads_strictly_and_gives_reference_codes",
        "test_direct_encode_equals_hf_encode_on_reference_pixels",
        "test_resize_and_crop_match_the_reference",
        "test_tiny_model_keeps_the_real_grid_at_a_fraction_of_the_cost",
    },
    "test_whole_input_errors": {"test_ctrl_c_names_the_command_that_resumes"},
    "test_write": {
        "test_fragments_in_any_order_give_identical_sorted_shards_that_load",
        "test_same_rows_in_any_order_give_identical_files",
    },
}


def is_slow(item: pytest.Item) -> bool:
    module = getattr(getattr(item, "module", None), "__name__", "")
    fixtures = SLOW_FIXTURES[""] | SLOW_FIXTURES.get(module, set())
    return (
        module in SLOW_MODULES
        or bool(fixtures & set(getattr(item, "fixturenames", ())))
        or getattr(item, "originalname", item.name) in SLOW_TESTS.get(module, set())
    )
