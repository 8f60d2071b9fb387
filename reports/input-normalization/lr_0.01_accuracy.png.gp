set terminal pngcairo size 800,500 font 'sans,10'
set output 'lr_0.01_accuracy.png'
set datafile separator ','
set title 'SGD lr 0.01: test accuracy (running statistics)' noenhanced
set xlabel 'step'
set ylabel 'test accuracy'
set grid
set key below noenhanced
set format x '%g'
set yrange [0:1]
plot 'evals.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / standardized per pixel / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU / standardized per pixel / lr 0.01', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / pixel/255 (0 to 1) / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU / pixel/255 (0 to 1) / lr 0.01', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / raw bytes 0..255 / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU / raw bytes 0..255 / lr 0.01', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'no BN / standardized per pixel / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN / standardized per pixel / lr 0.01', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'no BN / pixel/255 (0 to 1) / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN / pixel/255 (0 to 1) / lr 0.01', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'no BN / raw bytes 0..255 / lr 0.01' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN / raw bytes 0..255 / lr 0.01'
