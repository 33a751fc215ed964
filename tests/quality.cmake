# Training quality on real data (STARmap): scVI latent vs PCA, cell types and batch mixing.
av_test(test_quality test_quality.c av_app ${AV_DATA} 150)
set_tests_properties(test_quality PROPERTIES TIMEOUT 900)
